"""Calls of one kind sent together: one Redis round trip for every call that
waited while the previous one was in flight (as the admission groups do,
queueing/grouping.py), so a burst of joins costs a few round trips and a few
connections, not one of each per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Reply = TypeVar("Reply")


class CallGroups(Generic[Item, Reply]):
    """Sends items in groups of at most `group_max`, one group in flight at a time."""

    def __init__(self, send: Callable[[Sequence[Item]], Awaitable[Sequence[Reply]]],
                 group_max: int = 500) -> None:
        self._send = send
        self._group_max = group_max
        self._pending: list[tuple[Item, asyncio.Future[Reply]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, item: Item) -> Reply:
        """This item's reply, once its group's round trip is back; raises what the send raised."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._sender is None:
            # Its own task: a caller that gives up (a timeout) does not cancel the
            # round trip the others of its group wait for.
            self._sender = asyncio.create_task(self._send_all())
        return await asyncio.shield(future)

    async def _send_all(self) -> None:
        try:
            while self._pending:
                group = self._pending[:self._group_max]
                del self._pending[:self._group_max]
                try:
                    replies = await self._send([item for item, _ in group])
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), reply in zip(group, replies, strict=True):
                    if not future.done():
                        future.set_result(reply)
        finally:
            self._sender = None
