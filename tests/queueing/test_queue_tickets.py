"""Waiting room tickets: signed places that verify locally (queueing/queue_tickets.py)."""

from __future__ import annotations

import base64
import os

import msgpack
import pytest

from queueing.queue_tickets import (
    InvalidTicket,
    Ticket,
    TicketSigner,
    lottery_member,
    ticket_id,
)

TICKET = Ticket("w1", bytes(range(16)), 42, 1_700_000_000)


def signer(active: str = "k1", **keys: bytes) -> TicketSigner:
    return TicketSigner(keys or {"k1": b"k" * 32}, active)


def test_a_signed_ticket_verifies_to_what_was_signed() -> None:
    token = signer().sign(TICKET)
    assert token.startswith("q1.k1.")
    assert signer().verify(token) == TICKET


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),          # the MAC
    lambda t: t.replace("q1.", "q2.", 1),                              # the version
    lambda t: t.replace(".k1.", ".k9.", 1),                            # an unknown key id
    lambda t: "",
    lambda t: "q1.k1..",
    lambda t: t + "x" * 200,                                           # too long
])
def test_a_tampered_or_malformed_ticket_is_invalid(tamper: object) -> None:
    token = signer().sign(TICKET)
    with pytest.raises(InvalidTicket):
        signer().verify(tamper(token))  # type: ignore[operator]


def test_another_position_in_the_payload_breaks_the_mac() -> None:
    token = signer().sign(TICKET)
    version, key_id, _, mac = token.split(".")
    payload = msgpack.packb(["w1", bytes(range(16)), 1, 1_700_000_000])
    forged = f"{version}.{key_id}.{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}.{mac}"
    with pytest.raises(InvalidTicket):
        signer().verify(forged)


def test_a_rotated_key_still_verifies_tickets_it_signed() -> None:
    old, new = os.urandom(32), os.urandom(32)
    token = TicketSigner({"k1": old}, "k1").sign(TICKET)
    rotated = TicketSigner({"k1": old, "k2": new}, "k2")
    assert rotated.verify(token) == TICKET
    assert rotated.sign(TICKET).startswith("q1.k2.")
    with pytest.raises(InvalidTicket):
        TicketSigner({"k2": new}, "k2").verify(token)


def test_a_signed_payload_of_the_wrong_shape_is_invalid() -> None:
    # Signed with the right key, but not a ticket (e.g. another of our formats).
    s = signer()
    payload = base64.urlsafe_b64encode(msgpack.packb(["w1", b"short", -1, 0])).rstrip(b"=")
    signed = f"q1.k1.{payload.decode()}"
    token = f"{signed}.{base64.urlsafe_b64encode(s._mac('k1', signed)).rstrip(b'=').decode()}"
    with pytest.raises(InvalidTicket):
        s.verify(token)


def test_ticket_ids_are_per_nik_and_wave_and_the_lottery_orders_by_seed() -> None:
    nik_a, nik_b = os.urandom(32), os.urandom(32)
    assert ticket_id("w1", nik_a) == ticket_id("w1", nik_a)
    assert ticket_id("w1", nik_a) != ticket_id("w2", nik_a)
    assert ticket_id("w1", nik_a) != ticket_id("w1", nik_b)
    member = lottery_member(b"s" * 32, ticket_id("w1", nik_a))
    assert member.endswith(ticket_id("w1", nik_a)) and len(member) == 32
    assert lottery_member(b"t" * 32, ticket_id("w1", nik_a))[:16] != member[:16]
