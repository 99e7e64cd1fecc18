"""Live reload of the sealing, address and token keys in a door process (SIGHUP), for key rotation.

A rotation must not stop intake: on SIGHUP each door process re-reads its
configuration (the GELOMBANG_CONFIG file and the environment) and, when the
`[keys]` section is valid, seals every registration it admits from then on
with the new active sealing and address keys, and checks emailed links against the new list
of token keys (a link names the key that signed it, so links signed with a key
still listed stay valid). Nothing else is reloaded: the listeners, Redis
connections and requests in hand carry on. A bad new configuration is refused
with a log line (naming the key, never a value) and the keys in force stay.
The hash key cannot change this way: the keyed hashes of NIK and email are
compared with stored ones, so a new hash key would let duplicates in.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from config.settings import ConfigError, Settings
from intake.door import Door, address_sealer, token_signer
from intake.errors import IntakeError
from queueing.sealing import Sealer

log = logging.getLogger("gelombang.door")


class KeyReloadRefused(IntakeError):
    """The new configuration's keys cannot be put in force; the old ones stay."""


def reload_keys(door: Door) -> str:
    """Put the configuration's keys in force in this process; what is in force, in words."""
    try:
        fresh = Settings.load()
        fresh.keys.require_door()
    except ConfigError as exc:
        raise KeyReloadRefused(str(exc)) from None
    if fresh.keys.hash_key_bytes() != door.settings.keys.hash_key_bytes():
        raise KeyReloadRefused("keys.hash_key: cannot change while running")
    if door.token_signer is not None and not fresh.keys.token_keys:
        # Every emailed link would stop working at once.
        raise KeyReloadRefused("keys.token_keys: cannot be emptied while running")
    sealer = Sealer(fresh.keys.sealing_key_bytes(), fresh.keys.active_sealing_key_id)
    addresses = address_sealer(fresh)
    # Attribute swaps: a request being sealed or checked right now finishes with
    # what it took; the next one takes the new sealers and signer. The hash key
    # and so the hasher and the ids stay.
    door.admission.sealing = replace(door.admission.sealing, sealer=sealer,
                                     address_sealer=addresses)
    door.token_signer = token_signer(fresh)
    door.settings = door.settings.model_copy(update={"keys": fresh.keys})
    token_ids = ", ".join(repr(kid) for kid in sorted(fresh.keys.token_keys)) or "none"
    return (f"sealing with key id {sealer.active_key_id!r}, addresses with key id "
            f"{addresses.active_key_id!r}; "
            f"links checked with token key ids {token_ids}")


def on_reload_signal(door: Door, index: int) -> None:
    """The SIGHUP handler's work: reload, and say what is in force."""
    try:
        in_force = reload_keys(door)
    except KeyReloadRefused as exc:
        log.error("door process %d: keys not reloaded: %s", index, exc)
        return
    log.info("door process %d: keys reloaded; %s", index, in_force)
