"""The one retry policy backends share: exponential backoff on transient faults only.

Built on tenacity so the policy is declared, not hand-looped. The LoopOS guide asks for
1 s, 2 s, 4 s waits and 3 tries; tests shrink ``base_delay`` to keep the suite fast.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential,
)
from tenacity.stop import stop_base

T = TypeVar("T")


class _OutOfTime(stop_base):
    """Stop when the next wait plus the shortest useful attempt would pass the deadline."""

    def __init__(self, deadline: float | None, min_attempt: float) -> None:
        self.deadline = deadline
        self.min_attempt = min_attempt

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.deadline is None:
            return False
        sleep = retry_state.upcoming_sleep or 0.0
        return time.monotonic() + sleep + self.min_attempt >= self.deadline


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # total tries, the first included
    base_delay: float = 1.0  # first wait; doubles each time
    max_delay: float = 8.0

    def retrying(
        self,
        is_transient: Callable[[BaseException], bool],
        on_retry: Callable[[RetryCallState], None] | None = None,
        deadline: float | None = None,
        min_attempt: float = 0.0,
    ) -> AsyncRetrying:
        """``deadline`` (``time.monotonic``): no retry whose wait plus ``min_attempt`` would
        end past it; the caller bounds each attempt by what is left."""
        return AsyncRetrying(
            stop=stop_any(
                stop_after_attempt(max(1, self.attempts)), _OutOfTime(deadline, min_attempt)
            ),
            wait=wait_exponential(
                multiplier=self.base_delay, min=self.base_delay, max=self.max_delay
            ),
            retry=retry_if_exception(is_transient),
            before_sleep=on_retry,
            reraise=True,
        )

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        is_transient: Callable[[BaseException], bool],
        on_retry: Callable[[RetryCallState], None] | None = None,
        deadline: float | None = None,
        min_attempt: float = 0.0,
    ) -> T:
        """Run ``fn`` until it succeeds, a non-transient error is raised, or tries (or the
        time before ``deadline``) run out."""
        async for attempt in self.retrying(is_transient, on_retry, deadline, min_attempt):
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover
