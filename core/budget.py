"""Budgets shared by several replicas: the platform limits of one bot token and the per-user
turn limit, counted in Redis (:meth:`core.store.redis_coordination.RedisCoordination.take`,
a sliding log per limit in one Lua script) instead of in each process's memory.

Each process still paces itself locally (:class:`core.pacer.Pacer`, :class:`core.flood.
FloodControl`); these add the count across replicas. A place is taken when a call is granted,
a little before the platform stamps it, so shared windows are counted a little longer than
the platform's (``margin``): the aim is zero 429s, not the last message per second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatbridge.core.types import ConversationKey

if TYPE_CHECKING:
    from chatbridge.core.store.redis_coordination import RedisCoordination

log = logging.getLogger(__name__)


class SharedWindows:
    """:class:`core.pacer.SharedWindows` on Redis, for the pacer of one bot token."""

    def __init__(
        self,
        redis: RedisCoordination,
        name: str,
        *,
        margin: float = 1.1,
        slack: float = 0.05,
    ) -> None:
        self._redis = redis
        self._name = name
        self._margin = margin
        self._slack = slack
        self.waits = 0  # times a call waited for the other replicas' share (for benchmarks)

    async def take(self, windows: Sequence[tuple[str, int, float]]) -> None:
        named = [
            (f"{self._name}:{name}", limit, period * self._margin + self._slack)
            for name, limit, period in windows
        ]
        while True:
            try:
                wait = await self._redis.take(named)
            except Exception as exc:  # Redis out of reach: the local pacer still limits
                log.warning("shared budget %s unavailable: %s", self._name, exc)
                return
            if wait <= 0:
                return
            self.waits += 1
            await asyncio.sleep(wait)


class SharedFlood:
    """``turns_per_minute`` per user (per bot), across every replica
    (:class:`core.protocols.SharedFloodGate`). Refused turns are not counted."""

    def __init__(self, redis: RedisCoordination, turns_per_minute: int, window: float = 60.0):
        self._redis = redis
        self.limit = turns_per_minute
        self.window = window

    async def check_shared(self, key: ConversationKey) -> float | None:
        if self.limit <= 0:
            return None
        wait = await self._redis.take([(f"flood:{key.bot}:{key.user_id}", self.limit, self.window)])
        return None if wait <= 0 else wait
