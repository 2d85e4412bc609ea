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
