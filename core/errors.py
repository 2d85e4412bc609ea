"""The exceptions that cross layers: backends and the engine raise them, adapters catch them."""

from __future__ import annotations

from chatbridge.core.types import Failure


class NotSupported(Exception):
    """The configured backend does not offer this capability."""


class BackendError(Exception):
    """Raised by a backend's ``open`` (which returns no events) to report a failure."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.kind}: {failure.detail}")
        self.failure = failure


class DeliveryRefused(Exception):
    """The platform refused a message for good (bot blocked, chat gone): retrying cannot help."""


class StartupFailed(RuntimeError):
    """A bot could not connect to its platform at start-up.

    ``retryable`` when the platform may answer soon (network down, 5xx): the runner retries
    with backoff for a bounded time. ``hint`` tells the operator what to do.
    """

    def __init__(self, message: str, *, retryable: bool, hint: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.hint = hint
