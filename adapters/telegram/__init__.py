"""Telegram adapter (python-telegram-bot 22.x): see "Telegram bots" in the top-level README."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatbridge.adapters.telegram.options import TelegramOptions

if TYPE_CHECKING:
    from chatbridge.adapters.telegram.adapter import TelegramAdapter

__all__ = ["TelegramAdapter", "TelegramOptions"]


def __getattr__(name: str) -> Any:
    # The adapter pulls in python-telegram-bot; the options model (used by config loading) not.
    if name == "TelegramAdapter":
        from chatbridge.adapters.telegram.adapter import TelegramAdapter

        return TelegramAdapter
    raise AttributeError(name)
