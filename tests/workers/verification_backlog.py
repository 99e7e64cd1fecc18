"""A verification backlog made the way the drain makes one, fast: stored rows and their jobs."""

from __future__ import annotations

import uuid

import asyncpg

from config.settings import Settings
from loadtest.registrants import RegistrantFactory
from queueing.envelope import Envelope
from queueing.intake_admission import partition_of
from queueing.redis_client import RedisClient
from tests.support import seal_people
from workers.drain.handoff import Handoff, PendingHandoff
from workers.drain.store import store_batch

# Rows stored per statement while building a backlog.
CHUNK = 2000


async def stored_backlog(pg: asyncpg.Connection, redis: RedisClient, settings: Settings,
                         registrants: RegistrantFactory, count: int,
                         hand_off: bool = True) -> list[Envelope]:
    """`count` accepted registrations stored with pending verification; their jobs on the
    backlog streams (as the drain's hand-off adds them) unless `hand_off` is False."""
    factory_settings = settings.nik_sim
    people = [registrants.citizen(factory_settings.population_seed,
                                  factory_settings.existing_share) for _ in range(count)]
    envelopes = seal_people(settings, people)
    handoff = Handoff(redis, settings.drain.handoff_marker_seconds)
    partitions = settings.queue.partitions
    for start in range(0, count, CHUNK):
        chunk = envelopes[start:start + CHUNK]
        by_partition: dict[int, list[Envelope]] = {}
        for envelope in chunk:
            partition = partition_of(envelope.nik_hash, None, partitions)
            by_partition.setdefault(partition, []).append(envelope)
        for partition, group in by_partition.items():
            result = await store_batch(pg, partition, 0, group)
            if hand_off and result.handoff is not None:
                await handoff.hand_off([result.handoff])
    await pg.execute("DELETE FROM verification_handoffs")  # relayed (or never to be)
    return envelopes


async def hand_off_one(redis: RedisClient, settings: Settings, envelope: Envelope,
                       handoff_id: int) -> None:
    """Both jobs of one stored registration onto its partition's backlog streams."""
    partition = partition_of(envelope.nik_hash, None, settings.queue.partitions)
    await Handoff(redis, settings.drain.handoff_marker_seconds).hand_off(
        [PendingHandoff(handoff_id, partition, envelope.registration_id)])


def registration_uuid(envelope: Envelope) -> uuid.UUID:
    """The envelope's registration id as a UUID."""
    return uuid.UUID(bytes=envelope.registration_id)
