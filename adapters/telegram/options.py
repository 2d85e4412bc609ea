"""Options of one Telegram bot: the keys of a ``platform = "telegram"`` entry in the TOML file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

DEFAULT_API_BASE_URL = "https://api.telegram.org/bot"


class TelegramOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bot API server: the token is appended to both URLs (".../bot" + token), as PTB does.
    api_base_url: str = DEFAULT_API_BASE_URL
    # Derived from api_base_url when absent: "<server>/file/bot" (the Bot API server layout).
    file_base_url: str | None = None

    mode: Literal["polling", "webhook"] = "polling"
    poll_timeout: float = Field(default=10.0, ge=0, le=50)  # long-poll seconds

    # Webhook mode: a small HTTP listener that Telegram (or a reverse proxy) POSTs updates to.
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=0, le=65535)  # 0 = any free port (tests)
    webhook_url_path: str = "/telegram"
    # The public URL registered with setWebhook; default http://{listen}:{port}{path}.
    webhook_url: str | None = None
    # Telegram echoes it in X-Telegram-Bot-Api-Secret-Token; random when absent.
    webhook_secret_token: SecretStr | None = None

    # Streaming: at most one edit per chat per interval (Telegram allows about 1/s per chat).
    stream_interval: float = Field(default=1.0, ge=1.0)
    use_drafts: bool = True  # sendMessageDraft previews in private chats

    # Pacing: one budget per bot token shared by all its chats (core/pacer.py), so Telegram's
    # flood limits are met before Telegram has to enforce them (429s lead to long bans).
    bot_rate: int = Field(default=30, ge=0, le=1000)  # messages/s for the whole bot; 0 = off
    group_rate: int = Field(default=20, ge=0, le=1000)  # messages/min per group; 0 = off
    # Per chat: ``chat_rate`` messages/s sustained with bursts of ``chat_burst`` (a quick reply
    # or a button press is not held back); 0 turns per-chat pacing off (benchmarks, tests).
    chat_rate: float = Field(default=1.0, ge=0, le=100)
    chat_burst: int = Field(default=3, ge=1, le=20)
    # Draft previews are not limited by Telegram, but each costs the process a request: past
    # this many updates a second (whole bot) streams show fewer, larger draft updates; a
    # chat's first draft never waits. 0 = unbounded.
    draft_rate: int = Field(default=200, ge=0, le=100_000)
    # A final answer is retried through 429s and outages this long (seconds) before it is
    # given up (logged); a permanent refusal (bot blocked, chat gone) stops at once.
    delivery_deadline: float = Field(default=3600.0, gt=0)

    max_photo_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    album_wait: float = Field(default=0.8, gt=0, le=10)  # seconds to gather an album's parts

    # In groups: "mention" answers commands, @mentions and replies to the bot; "all" answers
    # every message (needs privacy mode off in BotFather).
    group_reply: Literal["mention", "all"] = "mention"

    # offer /listing and /condition (backends without them answer politely)
    listing_command: bool = True

    # HTTP client to the Bot API: at most this many requests in flight (more wait their turn in
    # the priority gate), over as many connections. A busy event loop turns each slot over
    # only every few iterations, so when a thousand chats start at once their first drafts
    # go out faster with more slots (bench/telegram_stream.py: p50 first text ~230 -> ~120 ms
    # from 64 to 128 on a loaded 2-core VM).
    connection_pool_size: int = Field(default=128, ge=1, le=1024)
    pool_timeout: float = Field(default=30.0, gt=0)
    stop_grace: float = Field(default=10.0, ge=0)  # seconds turns in flight get at stop()

    @model_validator(mode="after")
    def _check(self) -> TelegramOptions:
        if not self.api_base_url.startswith(("http://", "https://")):
            raise ValueError(
                "api_base_url must be an http(s) URL, e.g. https://api.telegram.org/bot"
            )
        if not self.webhook_url_path.startswith("/"):
            raise ValueError("webhook_url_path must start with '/'")
        if self.webhook_secret_token is not None:
            secret = self.webhook_secret_token.get_secret_value()
            if not (1 <= len(secret) <= 256) or not all(c.isalnum() or c in "_-" for c in secret):
                raise ValueError("webhook_secret_token: 1-256 characters of A-Z a-z 0-9 _ -")
        return self

    @property
    def resolved_file_base_url(self) -> str:
        """``file_base_url``, or the API URL with "/bot" turned into "/file/bot"."""
        if self.file_base_url:
            return self.file_base_url
        base = self.api_base_url.rstrip("/")
        if base.endswith("/bot"):
            return base[: -len("/bot")] + "/file/bot"
        return base + "/file/bot"
