"""Options of one Telegram bot: the keys of a ``platform = "telegram"`` entry in the TOML file."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from chatbridge.core.settings import Secret, Table

DEFAULT_API_BASE_URL = "https://api.telegram.org/bot"


def _http_url(value: str) -> str | None:
    if value.startswith(("http://", "https://")):
        return None
    return "must be an http(s) URL, e.g. https://api.telegram.org/bot"


def _url_path(value: str) -> str | None:
    return None if value.startswith("/") else "must start with '/'"


def _secret_token(value: Secret) -> str | None:
    secret = value.get_secret_value()
    if 1 <= len(secret) <= 256 and all(c.isalnum() or c in "_-" for c in secret):
        return None
    return "1-256 characters of A-Z a-z 0-9 _ -"


class TelegramOptions(Table, kw_only=True):
    # Bot API server: the token is appended to both URLs (".../bot" + token), as PTB does.
    api_base_url: str = DEFAULT_API_BASE_URL
    # Derived from api_base_url when absent: "<server>/file/bot" (the Bot API server layout).
    file_base_url: str | None = None

    mode: Literal["polling", "webhook"] = "polling"
    poll_timeout: Annotated[float, Meta(ge=0, le=50)] = 10.0  # long-poll seconds

    # Webhook mode: a small HTTP listener that Telegram (or a reverse proxy) POSTs updates to.
    webhook_listen: str = "127.0.0.1"
    webhook_port: Annotated[int, Meta(ge=0, le=65535)] = 8443  # 0 = any free port (tests)
    webhook_url_path: str = "/telegram"
    # The public URL registered with setWebhook; default http://{listen}:{port}{path}.
    webhook_url: str | None = None
    # Telegram echoes it in X-Telegram-Bot-Api-Secret-Token; random when absent.
    webhook_secret_token: Secret | None = None

    # Streaming: at most one edit per chat per interval (Telegram allows about 1/s per chat).
    stream_interval: Annotated[float, Meta(ge=1.0)] = 1.0
    use_drafts: bool = True  # sendMessageDraft previews in private chats

    # Pacing: one budget per bot token shared by all its chats (core/pacer.py), so Telegram's
    # flood limits are met before Telegram has to enforce them (429s lead to long bans).
    bot_rate: Annotated[int, Meta(ge=0, le=1000)] = 30  # messages/s for the whole bot; 0 = off
    group_rate: Annotated[int, Meta(ge=0, le=1000)] = 20  # messages/min per group; 0 = off
    # Per chat: ``chat_rate`` messages/s sustained with bursts of ``chat_burst`` (a quick reply
    # or a button press is not held back); 0 turns per-chat pacing off (benchmarks, tests).
    chat_rate: Annotated[float, Meta(ge=0, le=100)] = 1.0
    chat_burst: Annotated[int, Meta(ge=1, le=20)] = 3
    # Draft previews are not limited by Telegram, but each costs the process a request: past
    # this many updates a second (whole bot) streams show fewer, larger draft updates; a
    # chat's first draft never waits. 0 = unbounded.
    draft_rate: Annotated[int, Meta(ge=0, le=100_000)] = 200
    # A final answer is retried through 429s and outages this long (seconds) before it is
    # given up (logged); a permanent refusal (bot blocked, chat gone) stops at once.
    delivery_deadline: Annotated[float, Meta(gt=0)] = 3600.0

    max_photo_bytes: Annotated[int, Meta(gt=0)] = 10 * 1024 * 1024
    album_wait: Annotated[float, Meta(gt=0, le=10)] = 0.8  # seconds to gather an album's parts

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
    connection_pool_size: Annotated[int, Meta(ge=1, le=1024)] = 128
    pool_timeout: Annotated[float, Meta(gt=0)] = 30.0
    stop_grace: Annotated[float, Meta(ge=0)] = 10.0  # seconds turns in flight get at stop()

    key_checks = {
        "api_base_url": _http_url,
        "webhook_url_path": _url_path,
        "webhook_secret_token": _secret_token,
    }

    @property
    def resolved_file_base_url(self) -> str:
        """``file_base_url``, or the API URL with "/bot" turned into "/file/bot"."""
        if self.file_base_url:
            return self.file_base_url
        base = self.api_base_url.rstrip("/")
        if base.endswith("/bot"):
            return base[: -len("/bot")] + "/file/bot"
        return base + "/file/bot"
