"""The platforms' rate limits, as the fake servers enforce them (a fake kinder than the
platform hides bugs). Both count a request at its arrival, as the platforms do."""

from __future__ import annotations

import collections
import math
import re
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any


class SlidingWindows:
    """Arrival times per key: "at most ``limit`` in any ``period`` seconds"."""

    def __init__(self) -> None:
        self._recent: dict[Hashable, collections.deque[float]] = {}

    def wait(self, key: Hashable, limit: int, period: float, now: float, count: int = 1) -> float:
        """Seconds until ``count`` more arrivals fit (0: they fit now)."""
        recent = self._recent.setdefault(key, collections.deque())
        while recent and recent[0] <= now - period:
            recent.popleft()
        over = len(recent) + count - limit
        if over <= 0:
            return 0.0
        return recent[min(over, len(recent)) - 1] + period - now

    def add(self, key: Hashable, now: float, count: int = 1) -> None:
        self._recent.setdefault(key, collections.deque()).extend([now] * count)


@dataclass
class TelegramLimits:
    """Telegram's flood limits for messages (sends, edits, photos, media group items):
    ``bot_limit`` per ``bot_period`` for a bot across all chats, ``group_limit`` per
    ``group_period`` per group, and per chat a token bucket of one per ``interval`` with bursts
    of ``chat_burst``; drafts
    (``draft_interval`` apart) and chat actions are not counted. 0 turns a limit off."""

    interval: float = 1.0
    chat_burst: int = 3
    bot_limit: int = 30
    bot_period: float = 1.0
    group_limit: int = 20
    group_period: float = 60.0
    draft_interval: float = 0.0
    limited: dict[str, int] = field(
        default_factory=lambda: {"bot": 0, "group": 0, "chat": 0, "draft": 0}
    )
    windows: SlidingWindows = field(default_factory=SlidingWindows)
    chats: dict[Hashable, float] = field(default_factory=dict)  # per-chat bucket's GCRA TAT

    def check(
        self, token: str, chat: dict[str, Any], now: float, bucket: str, count: int = 1
    ) -> int | None:
        """None when the call may go (and it is counted), else the ``retry_after`` to answer.
        ``count``: the messages the call makes, for the bot-wide limit (a media group's)."""
        chat_id = chat["id"]
        checks: list[tuple[str, Hashable, int, float, int]] = []
        if bucket == "draft":
            if self.draft_interval > 0:
                checks.append(("draft", (token, chat_id, "draft"), 1, self.draft_interval, 1))
        else:
            if self.bot_limit > 0:
                checks.append(("bot", (token, "bot"), self.bot_limit, self.bot_period, count))
            if self.group_limit > 0 and chat.get("type") in ("group", "supergroup"):
                group = (token, chat_id, "group")
                checks.append(("group", group, self.group_limit, self.group_period, 1))
        chat_key = (token, chat_id)
        if bucket != "draft" and self.interval > 0:
            # about one a second with short bursts: a token bucket (GCRA) per chat
            tat = self.chats.get(chat_key, -math.inf)
            wait = tat - (self.chat_burst - 1) * self.interval - now
            if wait > 1e-9:
                self.limited["chat"] += 1
                return max(1, math.ceil(wait))
        for kind, key, limit, period, n in checks:
            wait = self.windows.wait(key, limit, period, now, n)
            if wait > 0:
                self.limited[kind] += 1
                return max(1, math.ceil(wait))
        for _kind, key, _limit, _period, n in checks:
            self.windows.add(key, now, n)
        if bucket != "draft" and self.interval > 0:
            self.chats[chat_key] = max(self.chats.get(chat_key, -math.inf), now) + self.interval
        return None


RATE_LIMITED = "You are being rate limited."


@dataclass
class DiscordLimits:
    """Discord's global limit (``global_limit`` requests per ``global_period`` per token, on
    every REST route but interaction endpoints) and each channel's message bucket
    (``message_bucket`` = (limit, period): a fixed window, as Discord's buckets are)."""

    global_limit: int = 50
    global_period: float = 1.0
    message_bucket: tuple[int, float] | None = (5, 5.0)
    global_limited: int = 0
    windows: SlidingWindows = field(default_factory=SlidingWindows)
    buckets: dict[int, list[float]] = field(default_factory=dict)  # channel: [count, resets at]

    def global_429(self, path: str, now: float) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The body and headers of Discord's global 429, or None when the call may go."""
        if self.global_limit <= 0 or re.match(r"/(interactions|webhooks)/", path):
            return None
        wait = self.windows.wait("global", self.global_limit, self.global_period, now)
        if wait <= 0:
            self.windows.add("global", now)
            return None
        self.global_limited += 1
        retry = round(wait + 0.001, 3)
        headers = {
            "Retry-After": str(max(1, math.ceil(retry))),
            "X-RateLimit-Global": "true",
            "X-RateLimit-Scope": "global",
            "Via": "1.1 google",
        }
        return {"message": RATE_LIMITED, "retry_after": retry, "global": True}, headers

    def bucket_429(
        self, channel_id: int | None, now: float
    ) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The channel's message bucket: a 429 past it, or None (and the call counted)."""
        if channel_id is None or self.message_bucket is None:
            return None
        limit, period = self.message_bucket
        state = self.buckets.setdefault(channel_id, [0, 0.0])
        if now >= state[1]:
            state[0], state[1] = 0, now + period
        if state[0] < limit:
            state[0] += 1
            return None
        retry = round(state[1] - now, 3)
        headers = self.bucket_headers(channel_id, now) | {
            "Retry-After": str(max(1, math.ceil(retry))),
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",
        }
        return {"message": RATE_LIMITED, "retry_after": retry, "global": False}, headers

    def bucket_headers(self, channel_id: int, now: float) -> dict[str, str]:
        """What every answer on the bucket announces (discord.py waits by these)."""
        if self.message_bucket is None or channel_id not in self.buckets:
            return {}
        limit, _ = self.message_bucket
        count, resets = self.buckets[channel_id]
        after = max(0.0, resets - now)
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - int(count))),
            "X-RateLimit-Reset": f"{time.time() + after:.3f}",
            "X-RateLimit-Reset-After": f"{after:.3f}",
            "X-RateLimit-Bucket": "channel-messages",
        }
