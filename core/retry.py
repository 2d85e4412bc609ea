"""The one retry policy backends share: exponential backoff on transient faults only.

Built on tenacity so the policy is declared, not hand-looped. The LoopOS guide asks for
1 s, 2 s, 4 s waits and 3 tries; tests shrink ``base_delay`` to keep the suite fast.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # total tries, the first included
    base_delay: float = 1.0  # first wait; doubles each time
    max_delay: float = 8.0

    def retrying(
        self,
        is_transient: Callable[[BaseException], bool],
        on_retry: Callable[[RetryCallState], None] | None = None,
    ) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(max(1, self.attempts)),
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
    ) -> T:
        """Run ``fn`` until it succeeds, a non-transient error is raised, or tries run out."""
        async for attempt in self.retrying(is_transient, on_retry):
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover
