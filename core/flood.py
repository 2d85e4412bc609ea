"""Per-user flood control: at most N turns per sliding minute, to protect the backends.

The engine calls :meth:`FloodControl.check` once per submitted message; ``None`` lets the turn
run (and counts it), a number tells the user how many seconds until they may write again.
Refused messages are not counted, so a user who keeps typing is not locked out longer.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable

from chatbridge.core.types import ConversationKey


def per_user(key: Hashable) -> Hashable:
    """The default bucket: one per (bot, user), across all the chats of that user."""
    if isinstance(key, ConversationKey):
        return (key.bot, key.user_id)
    return key


class FloodControl:
    """A sliding-window limiter keyed by user. ``max_turns_per_minute <= 0`` disables it."""

    def __init__(
        self,
        max_turns_per_minute: int,
        *,
        window: float = 60.0,
        bucket: Callable[[Hashable], Hashable] = per_user,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max_turns_per_minute
        self.window = window
        self._bucket = bucket
        self._clock = clock
        self._hits: dict[Hashable, deque[float]] = {}
        self._checks = 0

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def check(self, key: Hashable) -> float | None:
        """None = allowed (and counted); else seconds until the user may write again (> 0)."""
        if not self.enabled:
            return None
        now = self._clock()
        self._checks += 1
        if self._checks % 1024 == 0:
            self._sweep(now)
        bucket = self._bucket(key)
        hits = self._hits.get(bucket)
        if hits is None:
            hits = self._hits[bucket] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) < self.limit:
            hits.append(now)
            return None
        # The oldest turn in the window leaves it at hits[0] + window.
        return max(hits[0] + self.window - now, 0.001)

    def reset(self, key: Hashable) -> None:
        """Forget a user's recent turns (e.g. after an admin reset)."""
        self._hits.pop(self._bucket(key), None)

    def _sweep(self, now: float) -> None:
        # Drop users idle for a whole window so memory follows active users only.
        cutoff = now - self.window
        for bucket in [b for b, hits in self._hits.items() if not hits or hits[-1] <= cutoff]:
            del self._hits[bucket]

    def __len__(self) -> int:
        """Users currently tracked (for tests and metrics)."""
        return len(self._hits)
