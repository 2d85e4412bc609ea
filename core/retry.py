"""Retries: the policy backends share, and :func:`deliver` for messages sent to a platform.

Backends (:class:`RetryPolicy`): exponential backoff on transient faults only, declared on
tenacity. The LoopOS guide asks for 1 s, 2 s, 4 s waits and 3 tries; tests shrink
``base_delay`` to keep the suite fast. Platforms (:func:`deliver`): 429s honoured and outages
backed off until a delivery deadline, in the one helper every adapter's sends go through.
"""

from __future__ import annotations

import asyncio
import logging
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

from chatbridge.core.errors import PlatformUnavailable, RateLimited

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


# --- delivering to a platform: never given up before the deadline ------------------------------

log = logging.getLogger(__name__)

DEFAULT_DELIVERY_DEADLINE = 3600.0  # seconds a final answer keeps being retried


async def deliver(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    deadline: float = DEFAULT_DELIVERY_DEADLINE,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
) -> T:
    """Run ``fn`` until it succeeds, retrying platform refusals that pass with time.

    A 429 (:class:`RateLimited`) is retried after exactly the time the platform asked for; a
    network error or a 5xx (:class:`PlatformUnavailable`) after an exponential backoff. Any
    other exception (a permanent refusal such as ``DeliveryRefused``) goes straight up. Past
    ``deadline`` seconds the last failure is raised, and logged: nothing is given up silently.
    (A plain loop: it runs for every message a bot sends.)
    """
    started = time.monotonic()
    outages = 0
    while True:
        try:
            return await fn()
        except (RateLimited, PlatformUnavailable) as exc:
            left = deadline - (time.monotonic() - started)
            if left <= 0:
                log.error(
                    "gave up delivering %s after %.0f s: %s",
                    what,
                    time.monotonic() - started,
                    type(exc).__name__,
                )
                raise
            if isinstance(exc, RateLimited):
                wait = exc.retry_after  # the platform said how long: honour it exactly
            else:
                outages += 1
                wait = min(max_delay, base_delay * 2 ** (outages - 1))
            await asyncio.sleep(min(wait, left))
