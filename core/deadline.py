"""The running turn's deadline, so a backend's retries end before the engine gives up.

The engine sets it around each turn (:func:`turn_deadline`); a backend reads
:func:`time_left` inside ``turn``. A context variable rather than a parameter: the backend's
async generator runs in the engine task's context, and the Backend protocol stays as it is.
Outside a turn (a decision or listing service called on its own) there is no deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["deadline", "time_left", "turn_deadline"]

_deadline: ContextVar[float | None] = ContextVar("chatbridge_turn_deadline", default=None)


@contextmanager
def turn_deadline(seconds: float) -> Iterator[None]:
    """Within this block, the turn must end ``seconds`` from now (``time.monotonic``)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline() -> float | None:
    """The running turn's deadline on the ``time.monotonic`` clock, or None."""
    return _deadline.get()


def time_left() -> float | None:
    """Seconds until the running turn's deadline (negative once past), or None."""
    end = _deadline.get()
    return None if end is None else end - time.monotonic()
