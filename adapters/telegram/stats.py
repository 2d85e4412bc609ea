"""Counts of one Telegram bot's platform calls (shown by /stats, exported as metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatbridge.core.protocols import PlatformMetrics


@dataclass
class Stats:
    """Platform calls of one bot; also reported to the process metrics when there are any."""

    rate_limited: int = 0
    messages_sent: int = 0
    edits: int = 0
    drafts: int = 0
    network_errors: int = 0
    refused: int = 0  # messages the platform refused for good (bot blocked, chat gone)
    bot: str = ""
    metrics: PlatformMetrics | None = field(default=None, repr=False)

    def sent(self) -> None:
        self.messages_sent += 1
        if self.metrics is not None:
            self.metrics.message_sent(self.bot, "telegram")

    def edited(self, draft: bool = False) -> None:
        if draft:
            self.drafts += 1
        else:
            self.edits += 1
        if self.metrics is not None:  # a draft update is a streaming edit too
            self.metrics.message_edited(self.bot, "telegram")

    def limited(self) -> None:
        self.rate_limited += 1
        if self.metrics is not None:
            self.metrics.rate_limited(self.bot, "telegram")

    def delivery_refused(self) -> None:
        self.refused += 1
        if self.metrics is not None:
            self.metrics.delivery_refused(self.bot, "telegram")
