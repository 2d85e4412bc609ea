"""Configuration of one Discord bot (the ``[[bots]]`` keys beyond name/backend/token/admins)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from chatbridge.core.images import DEFAULT_MAX_IMAGE_BYTES

__all__ = ["DiscordOptions"]


class DiscordOptions(BaseModel):
    """Options of a Discord bot; ``bots/config.py`` mixes these into the bot's TOML table."""

    api_base_url: str | None = None
    """REST base including the version, e.g. ``http://nirn-proxy:8080/api/v10`` (default:
    ``https://discord.com/api/v10``). Process-wide in discord.py: every Discord bot of one
    process must use the same value."""

    gateway_url: str | None = None
    """Gateway WebSocket URL, e.g. ``ws://gateway-proxy:7878`` (default: Discord's). Also
    process-wide."""

    channels: list[int] = Field(default_factory=list)
    """Guild channel ids where the bot answers every message, without being mentioned."""

    threads: bool = False
    """Open a thread per shopper conversation (guild channels only; DMs never have threads)."""

    thread_auto_archive_minutes: Literal[60, 1440, 4320, 10080] = 1440

    stream_interval: float = Field(default=1.5, gt=0, le=60)
    """Seconds between edits of a streamed answer; Discord allows about 5 edits / 5 s per
    channel, so 1.5 s leaves room for other users in the same channel."""

    global_rate: int = Field(default=50, ge=0, le=10_000)
    """REST requests a second for the whole bot (Discord's global limit is 50 per token; a
    bot with a raised limit may say so). Finals and first messages go before streaming
    edits within it. 0 turns the bot's own pacing off (discord.py then meets 429s)."""

    delivery_deadline: float = Field(default=3600.0, gt=0)
    """Seconds a final answer keeps being retried through outages before it is given up
    (logged); a permanent refusal (bot blocked, channel gone) stops at once."""

    max_image_bytes: int = Field(default=DEFAULT_MAX_IMAGE_BYTES, gt=0)
    max_images: int = Field(default=4, ge=0, le=10)

    message_content_intent: bool = True
    """Request the privileged Message Content intent (enable it in the Developer Portal).
    Without it the bot still reads DMs and messages that mention it."""

    sync_commands: bool = True
    """Register the slash commands with Discord at start-up (PUT, idempotent)."""

    command_guilds: list[int] = Field(default_factory=list)
    """Register the slash commands in these guilds (instant) instead of globally."""

    shard_id: int | None = Field(default=None, ge=0)
    shard_count: int | None = Field(default=None, ge=1)
    """Run one shard of a bot split across processes (set both; DMs arrive on shard 0)."""

    catch_up_limit: int = Field(default=1000, ge=1, le=100_000)
    """Messages read back per channel (and per thread) after downtime, oldest first; past it
    the rest stay unanswered and a warning is logged."""

    guild_ready_timeout: float = Field(default=2.0, gt=0, le=60)
    """How long discord.py waits for GUILD_CREATE events before it reports ready."""

    @model_validator(mode="after")
    def _check_shards(self) -> DiscordOptions:
        if (self.shard_id is None) != (self.shard_count is None):
            raise ValueError("shard_id and shard_count go together")
        if self.shard_count is not None and (self.shard_id or 0) >= self.shard_count:
            raise ValueError("shard_id must be below shard_count")
        return self

    @field_validator("api_base_url")
    @classmethod
    def _check_api(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("api_base_url must be an http(s) URL, e.g. http://proxy:8080/api/v10")
        return value.rstrip("/")

    @field_validator("gateway_url")
    @classmethod
    def _check_gateway(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError("gateway_url must be a ws:// or wss:// URL")
        return value
