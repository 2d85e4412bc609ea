"""Inline keyboards: payload buttons (short store ids) and URL buttons, laid out in rows."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from chatbridge.core.types import Button, Link

log = logging.getLogger(__name__)

MAX_BUTTONS = 100


def _valid_url(url: str) -> bool:
    return url.startswith(("https://", "http://", "tg://"))


def _label(text: str) -> str:
    text = " ".join(text.split()) or "•"
    return text if len(text) <= 60 else text[:59] + "…"


def layout(buttons: Sequence[InlineKeyboardButton]) -> list[list[InlineKeyboardButton]]:
    """Short labels 3 a row, medium 2, long ones alone (Telegram's hard cap is 8 a row)."""
    rows: list[list[InlineKeyboardButton]] = []
    row: list[InlineKeyboardButton] = []
    widest = 0
    for button in buttons:
        w = max(widest, len(button.text))
        cap = 3 if w <= 12 else 2 if w <= 24 else 1
        if row and len(row) >= cap:
            rows.append(row)
            row, w = [], len(button.text)
        row.append(button)
        widest = w
    if row:
        rows.append(row)
    return rows


async def build_keyboard(
    buttons: Sequence[Button],
    links: Sequence[Link],
    button_id: Callable[[str], Awaitable[str]],
    inline_urls: str = "",
) -> InlineKeyboardMarkup | None:
    """Payload buttons (callback_data = "b:" + a short store id), then URL buttons."""
    choices: list[InlineKeyboardButton] = []
    urls: list[InlineKeyboardButton] = []
    for b in buttons:
        if b.payload is not None:
            data = "b:" + await button_id(b.payload)
            if not 1 <= len(data.encode("utf-8")) <= 64:
                log.error("button id too long for Telegram (%d bytes); button dropped", len(data))
                continue
            choices.append(InlineKeyboardButton(_label(b.label), callback_data=data))
        elif b.url and _valid_url(b.url):
            urls.append(InlineKeyboardButton(_label(b.label), url=b.url))
    for link in links:
        # a link the text already shows inline needs no button
        if _valid_url(link.url) and f'href="{link.url}"' not in inline_urls:
            urls.append(InlineKeyboardButton(_label(link.label), url=link.url))
    rows = layout(choices) + layout(urls)
    kept, total = [], 0
    for row in rows:
        if total + len(row) > MAX_BUTTONS:
            break
        kept.append(row)
        total += len(row)
    return InlineKeyboardMarkup(kept) if kept else None
