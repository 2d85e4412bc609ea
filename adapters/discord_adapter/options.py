"""Configuration of one Discord bot (the ``[[bots]]`` keys beyond name/backend/token/admins)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from msgspec import Meta

from chatbridge.core.images import DEFAULT_MAX_IMAGE_BYTES
from chatbridge.core.settings import Table

__all__ = ["DiscordOptions"]


def _api_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc:
        return None
    return "must be an http(s) URL, e.g. http://proxy:8080/api/v10"


def _gateway_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme in ("ws", "wss") and parts.netloc:
        return None
    return "must be a ws:// or wss:// URL"


class DiscordOptions(Table, kw_only=True):
    """Options of a Discord bot; ``bots/config.py`` mixes these into the bot's TOML table."""

    api_base_url: str | None = None
    """REST base including the version, e.g. ``http://nirn-proxy:8080/api/v10`` (default:
    ``https://discord.com/api/v10``). Process-wide in discord.py: every Discord bot of one
    process must use the same value."""

    gateway_url: str | None = None
    """Gateway WebSocket URL, e.g. ``ws://gateway-proxy:7878`` (default: Discord's). Also
    process-wide."""

    channels: list[int] = []
    """Guild channel ids where the bot answers every message, without being mentioned."""

    threads: bool = False
    """Open a thread per shopper conversation (guild channels only; DMs never have threads)."""

    thread_auto_archive_minutes: Literal[60, 1440, 4320, 10080] = 1440

    stream_interval: Annotated[float, Meta(gt=0, le=60)] = 1.5
    """Seconds between edits of a streamed answer; Discord allows about 5 edits / 5 s per
    channel, so 1.5 s leaves room for other users in the same channel."""

    global_rate: Annotated[int, Meta(ge=0, le=10_000)] = 50
    """REST requests a second for the whole bot (Discord's global limit is 50 per token; a
    bot with a raised limit may say so). Finals and first messages go before streaming
    edits within it. 0 turns the bot's own pacing off (discord.py then meets 429s)."""

    delivery_deadline: Annotated[float, Meta(gt=0)] = 3600.0
    """Seconds a final answer keeps being retried through outages before it is given up
    (logged); a permanent refusal (bot blocked, channel gone) stops at once."""

    max_image_bytes: Annotated[int, Meta(gt=0)] = DEFAULT_MAX_IMAGE_BYTES
    max_images: Annotated[int, Meta(ge=0, le=10)] = 4

    message_content_intent: bool = True
    """Request the privileged Message Content intent (enable it in the Developer Portal).
    Without it the bot still reads DMs and messages that mention it."""

    sync_commands: bool = True
    """Register the slash commands with Discord at start-up (PUT, idempotent)."""

    command_guilds: list[int] = []
    """Register the slash commands in these guilds (instant) instead of globally."""

    shard_id: Annotated[int, Meta(ge=0)] | None = None
    shard_count: Annotated[int, Meta(ge=1)] | None = None
    """Run one shard of a bot split across processes (set both; DMs arrive on shard 0)."""

    catch_up_limit: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    """Messages read back per channel (and per thread) after downtime, oldest first; past it
    the rest stay unanswered and a warning is logged."""

    guild_ready_timeout: Annotated[float, Meta(gt=0, le=60)] = 2.0
    """How long discord.py waits for GUILD_CREATE events before it reports ready."""

    key_checks = {"api_base_url": _api_url, "gateway_url": _gateway_url}

    def __post_init__(self) -> None:
        if self.api_base_url is not None:
            self.api_base_url = self.api_base_url.rstrip("/")
        super().__post_init__()

    def _problems(self) -> list[tuple[str, str]]:
        found = super()._problems()
        if (self.shard_id is None) != (self.shard_count is None):
            found.append(("", "shard_id and shard_count go together"))
        elif self.shard_count is not None and (self.shard_id or 0) >= self.shard_count:
            found.append(("", "shard_id must be below shard_count"))
        return found
