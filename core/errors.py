"""The exceptions that cross layers: backends and the engine raise them, adapters catch them."""

from __future__ import annotations

import contextlib
import json
import logging
from types import TracebackType

from chatbridge.core.types import Failure, FailureKind, FailureReason


class NotSupported(Exception):
    """The configured backend does not offer this capability."""


class BackendError(Exception):
    """Raised by a backend's ``open`` (which returns no events) to report a failure."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.kind}: {failure.detail}")
        self.failure = failure


def failure_to_text(failure: Failure) -> str:
    """A failure as JSON, to cross to another replica (session commands)."""
    return json.dumps(
        {
            "kind": str(failure.kind),
            "detail": failure.detail,
            "retryable": failure.retryable,
            "reason": None if failure.reason is None else str(failure.reason),
            "fields": dict(failure.fields),
        },
        default=str,
    )


def failure_from_text(text: str) -> Failure:
    data = json.loads(text)
    reason = data["reason"]
    return Failure(
        FailureKind(data["kind"]),
        data["detail"],
        data["retryable"],
        reason=None if reason is None else FailureReason(reason),
        fields=data["fields"],
    )


class DeliveryRefused(Exception):
    """The platform refused a message for good (bot blocked, chat gone): retrying cannot help."""


class FencedOut(Exception):
    """Several replicas: this replica no longer holds the lease its turn started under (it
    stalled and another took the conversation over); the turn stops without a word to the
    user, since the new holder runs it."""


class RateLimited(Exception):
    """The platform answered 429 (or asked us to wait): try again after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.2f} s")
        self.retry_after = max(0.0, float(retry_after))


class PlatformUnavailable(Exception):
    """A network error or a 5xx from the platform: worth trying again after a pause."""


class StartupFailed(RuntimeError):
    """A bot could not connect to its platform at start-up.

    ``retryable`` when the platform may answer soon (network down, 5xx): the runner retries
    with backoff for a bounded time. ``hint`` tells the operator what to do.
    """

    def __init__(self, message: str, *, retryable: bool, hint: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.hint = hint


class best_effort(contextlib.AbstractContextManager["best_effort"]):
    """``with best_effort(log, "closing the session"):`` — cleanup whose failure must not stop
    the caller (shutdown, closing a session being replaced), but is never silent either: a
    failure is logged once at WARNING, its traceback at DEBUG.

    ``BaseException`` (cancellation, KeyboardInterrupt) passes through untouched.
    """

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self._log.warning("%s failed: %r", self._what, exc)
        self._log.debug("%s failed", self._what, exc_info=exc)
        return True
