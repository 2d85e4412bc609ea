"""ShopAI backend configuration (one ``[backends.<name>]`` table with ``type = "shopai"``)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta
from msgspec.structs import force_setattr

from chatbridge.core.settings import FrozenTable, Secret

__all__ = ["ShopAISettings"]

Positive = Meta(gt=0)
AtLeastOne = Meta(ge=1)
NotNegative = Meta(ge=0)


def _http_url(value: str) -> str | None:
    if value.strip().startswith(("http://", "https://")):
        return None
    return "must start with http:// or https://"


class ShopAISettings(FrozenTable, frozen=True, kw_only=True):
    """Everything the ShopAI backend reads; the defaults follow the ShopAI documents."""

    type: Literal["shopai"] = "shopai"
    base_url: str
    license_key: Secret
    language: str = "en"  # used when the user's language is unknown or unsupported
    protocol: Literal["auto", "websocket", "socketio"] = "auto"
    heartbeat_interval: Annotated[float, Positive] = 15.0  # v0.1: "every 15 seconds"
    idle_timeout: Annotated[float, Positive] = 300.0  # close a conversation's connection when idle
    max_message_length: Annotated[int, AtLeastOne] = 512
    connect_timeout: Annotated[float, Positive] = 10.0
    request_timeout: Annotated[float, Positive] = 15.0  # /init_session and /version
    answer_timeout: Annotated[float, Positive] = 120.0  # longest silence while an answer is due
    reconnect_attempts: Annotated[int, AtLeastOne] = 4
    reconnect_backoff: Annotated[float, NotNegative] = 0.5  # first wait; doubles each attempt
    reconnect_backoff_max: Annotated[float, NotNegative] = 8.0
    auth_failure_ttl: Annotated[float, NotNegative] = 60.0  # no new /init_session for this long
    max_concurrent_inits: Annotated[int, AtLeastOne] = 64  # bounds a burst of new conversations
    max_concurrent_connects: Annotated[int, AtLeastOne] = 32  # handshakes in flight at once

    def __post_init__(self) -> None:
        force_setattr(self, "base_url", self.base_url.strip().rstrip("/"))
        force_setattr(self, "language", self.language.strip().lower())
        super().__post_init__()

    key_checks = {"base_url": _http_url}
