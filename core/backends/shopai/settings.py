"""ShopAI backend configuration (one ``[backends.<name>]`` table with ``type = "shopai"``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["ShopAISettings"]


class ShopAISettings(BaseModel):
    """Everything the ShopAI backend reads; the defaults follow the ShopAI documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["shopai"] = "shopai"
    base_url: str
    license_key: SecretStr
    language: str = "en"  # used when the user's language is unknown or unsupported
    protocol: Literal["auto", "websocket", "socketio"] = "auto"
    heartbeat_interval: Annotated[float, Field(gt=0)] = 15.0  # v0.1: "every 15 seconds"
    idle_timeout: Annotated[float, Field(gt=0)] = (
        300.0  # close a conversation's connection when idle
    )
    max_message_length: Annotated[int, Field(ge=1)] = 512
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    request_timeout: Annotated[float, Field(gt=0)] = 15.0  # /init_session and /version
    answer_timeout: Annotated[float, Field(gt=0)] = 120.0  # longest silence while an answer is due
    reconnect_attempts: Annotated[int, Field(ge=1)] = 4
    reconnect_backoff: Annotated[float, Field(ge=0)] = 0.5  # first wait; doubles each attempt
    reconnect_backoff_max: Annotated[float, Field(ge=0)] = 8.0
    auth_failure_ttl: Annotated[float, Field(ge=0)] = (
        60.0  # don't ask /init_session again for this long
    )
    max_concurrent_inits: Annotated[int, Field(ge=1)] = 64  # bounds a burst of new conversations
    max_concurrent_connects: Annotated[int, Field(ge=1)] = 32  # handshakes in flight at once

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value

    @field_validator("language")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()
