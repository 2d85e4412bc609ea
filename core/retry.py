"""Retries: the policy backends share, and :func:`deliver` for messages sent to a platform.

Backends (:class:`RetryPolicy`): exponential backoff on transient faults only. Platforms
(:func:`deliver`): 429s honoured and outages backed off until a delivery deadline, in the one
helper every adapter's sends go through.

The LoopOS guide asks for 1 s, 2 s, 4 s waits and 3 tries; tests shrink ``base_delay`` to keep
the suite fast. A plain loop rather than tenacity: tenacity costs a handful of objects per
call (every LoopOS turn goes through here) and imports tornado whenever it is installed, a
few MiB in every process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from chatbridge.core.errors import PlatformUnavailable, RateLimited

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryState:
    """What ``on_retry`` learns before each wait."""

    attempt_number: int  # the try that just failed, from 1
    error: BaseException
    wait: float  # seconds until the next try


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # total tries, the first included
    base_delay: float = 1.0  # first wait; doubles each time
    max_delay: float = 8.0

    def delay(self, attempt_number: int) -> float:
        """The wait after try ``attempt_number`` (1-based): base, 2 x base, ... up to max."""
        return max(0.0, min(self.base_delay * 2 ** (attempt_number - 1), self.max_delay))

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        is_transient: Callable[[BaseException], bool],
        on_retry: Callable[[RetryState], None] | None = None,
        deadline: float | None = None,
        min_attempt: float = 0.0,
    ) -> T:
        """Run ``fn`` until it succeeds, a non-transient error is raised, or tries (or the
        time before ``deadline``) run out; then the last error is raised as it was.

        ``deadline`` (``time.monotonic``): no retry whose wait plus ``min_attempt`` would end
        past it; the caller bounds each attempt by what is left.
        """
        attempts = max(1, self.attempts)
        attempt = 1
        while True:
            try:
                return await fn()
            except Exception as exc:
                if attempt >= attempts or not is_transient(exc):
                    raise
                wait = self.delay(attempt)
                if deadline is not None and time.monotonic() + wait + min_attempt >= deadline:
                    raise
                if on_retry is not None:
                    on_retry(RetryState(attempt, exc, wait))
            await asyncio.sleep(wait)
            attempt += 1


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
