"""Inline keyboards: a reply's buttons as Telegram buttons, and the callback data format.

A payload button's ``callback_data`` is ``"b:" + <short id>``: the id the engine gave the
button when the answer arrived (Telegram's callback_data holds 64 bytes; payloads can be
longer). This is the one module that writes and reads that format.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from chatbridge.core.types import Button, Link

__all__ = [
    "MAX_BUTTONS",
    "build_keyboard",
    "callback_data",
    "layout",
    "pressed_label",
    "short_id_of",
]

log = logging.getLogger(__name__)

MAX_BUTTONS = 100
MAX_CALLBACK_BYTES = 64
_PREFIX = "b:"


def callback_data(short_id: str) -> str | None:
    """The callback_data of a button with this id; None when Telegram would refuse it."""
    data = _PREFIX + short_id
    return data if 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_BYTES else None


def short_id_of(data: str | None) -> str | None:
    """The button id in a pressed button's callback_data (None: not one of ours)."""
    if not data or not data.startswith(_PREFIX):
        return None
    return data[len(_PREFIX) :] or None


def pressed_label(markup: InlineKeyboardMarkup | None, data: str) -> str | None:
    """The label the user saw on the pressed button (its message's keyboard shows it)."""
    for row in markup.inline_keyboard if markup is not None else ():
        for button in row:
            if button.callback_data == data:
                return button.text
    return None


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


def build_keyboard(
    buttons: Sequence[Button], links: Sequence[Link], inline_urls: str = ""
) -> InlineKeyboardMarkup | None:
    """Payload buttons (by the ids the engine gave them), then URL buttons.

    ``inline_urls`` is the message's rendered text: a link it already shows needs no button.
    """
    choices: list[InlineKeyboardButton] = []
    urls: list[InlineKeyboardButton] = []
    for b in buttons:
        if b.payload is not None:
            data = callback_data(b.id) if b.id is not None else None
            if data is None:
                log.error("button without a usable id (%r); button dropped", b.id)
                continue
            choices.append(InlineKeyboardButton(_label(b.label), callback_data=data))
        elif b.url and _valid_url(b.url):
            urls.append(InlineKeyboardButton(_label(b.label), url=b.url))
    for link in links:
        shown = f'href="{html.escape(link.url, quote=True)}"' in inline_urls
        if _valid_url(link.url) and not shown:
            urls.append(InlineKeyboardButton(_label(link.label), url=link.url))
    rows = layout(choices) + layout(urls)
    kept, total = [], 0
    for row in rows:
        if total + len(row) > MAX_BUTTONS:
            break
        kept.append(row)
        total += len(row)
    return InlineKeyboardMarkup(kept) if kept else None
