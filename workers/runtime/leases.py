"""Partition leases: one worker process of a role at a time reads a partition's stream.

Two processes storing batches of one partition at once could store a later
registration before an earlier one with the same NIK, making the earlier one
the duplicate, and their transactions deadlock on each other's unique index
entries (PostgreSQL notices after `deadlock_timeout`, a second, and one
batch is retried): two worker processes drained 100,000 registrations at
half the rate of one. With a lease, a partition's batches are stored one
after another, in the order they were read.

A lease is `gelombang:{pN}:<role>:lease` (the drain's: `…:drain:lease`),
holding the worker's name, set for the role's `claim_idle_seconds` and
renewed before every read. The verification workers take leases too: one
process reads a partition's jobs, so N processes make N blocking reads per
partition no more, and a partition's jobs are spread over the processes. A worker holds at
most its fair share, the partitions divided by the live workers (by their
heartbeats), so another process takes over half of them within a
heartbeat; a stopping worker gives its leases up, a dead one's expire.

Every take of a lease raises the partition's epoch
(`gelombang:{pN}:<role>:epoch`, queueing/lua/lease.lua); a renewal keeps
it. A batch carries the epoch it was read under, and the drain's store
refuses to write under an epoch older than one PostgreSQL has seen
(fencing): a worker paused past its lease, or whose statement waited in a
hung PostgreSQL, cannot write once its successor has (`LeaseLost`).
"""

from __future__ import annotations

import math

from queueing.keys import Partition
from queueing.redis_client import RedisClient
from queueing.scripts import PipelinedScript, script_source


class LeaseLost(Exception):
    """A newer holder of the partition's lease has written: this batch is its now."""


class PartitionLeases:
    """The partitions one worker may drain, taken and renewed in Redis."""

    def __init__(self, redis: RedisClient, worker: str, partition_count: int,
                 seconds: float, role: str = "drain") -> None:
        self._script = PipelinedScript(redis, script_source("lease"))
        self._role = role
        self._worker = worker
        self._partition_count = partition_count
        self._milliseconds = max(1, int(seconds * 1000))
        self.held: set[int] = set()
        # The epoch of each lease held, as of its take (a renewal keeps it).
        self.epochs: dict[int, int] = {}
        self.share = partition_count

    def set_live_workers(self, count: int) -> None:
        """Hold at most the partitions divided by the live workers (rounded up)."""
        self.share = math.ceil(self._partition_count / max(1, count))

    async def hold(self, partition: Partition) -> bool:
        """Take or renew the partition's lease; whether this worker may drain it now.

        A worker over its share gives this partition up instead (its loop has
        no batch in hand when it asks).
        """
        mine = partition.index in self.held
        if mine and len(self.held) > self.share:
            await self.give_up(partition)
            return False
        if not mine and len(self.held) >= self.share:
            return False
        if await self._call(partition, take=True):
            self.held.add(partition.index)
            return True
        self.held.discard(partition.index)
        return False

    async def renew(self, partition: Partition) -> None:
        """Keep the lease of a partition whose batch is in hand (share or not)."""
        if partition.index in self.held and not await self._call(partition, take=True):
            self.held.discard(partition.index)  # another worker took it: it expired

    def lost(self, partition: Partition) -> None:
        """A newer holder wrote (fencing): hold it no more until it is taken again."""
        self.held.discard(partition.index)

    async def give_up(self, partition: Partition) -> None:
        """Release the partition's lease, if this worker holds it."""
        self.held.discard(partition.index)
        await self._call(partition, take=False)

    async def give_up_all(self) -> None:
        """Release every lease this worker holds (stopping)."""
        for index in sorted(self.held):
            await self.give_up(Partition(index))

    async def _call(self, partition: Partition, *, take: bool) -> bool:
        epoch = int(await self._script.run(
            [partition.lease(self._role), partition.lease_epoch(self._role)],
            [self._worker, self._milliseconds, int(take)]))
        if epoch:
            self.epochs[partition.index] = epoch
        else:
            self.epochs.pop(partition.index, None)
        return bool(epoch)
