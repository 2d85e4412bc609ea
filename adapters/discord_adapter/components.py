"""Backend buttons as Discord components that keep working after a restart.

A payload button's ``custom_id`` is ``cb:<user id>:<short id>``: the user it was meant for and
the short id the engine gave the button, which the store maps back to the full payload
(Discord allows 100 chars of custom_id; payloads can be longer, and the label is cut to 80).
:class:`PayloadButton` is a :class:`discord.ui.DynamicItem` registered with
``Client.add_dynamic_items`` at setup, so a press is understood from the ``custom_id`` alone,
by whichever process runs the bot, after any number of restarts. Views are never stored in
discord.py's view store (they are stopped before sending) so no press is handled twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import discord

from chatbridge.adapters.discord_adapter.render import cut_label
from chatbridge.core.types import Button, Link

__all__ = [
    "MAX_BUTTONS",
    "ButtonHandler",
    "PayloadButton",
    "build_view",
    "disabled_copy",
]

log = logging.getLogger(__name__)

MAX_BUTTONS = 25  # 5 rows x 5 buttons (legacy components)
MAX_URL = 512
TEMPLATE = r"cb:(?P<uid>[0-9]{1,20}):(?P<sid>[A-Za-z0-9_-]{1,16})"


class ButtonHandler(Protocol):
    """What the client offers a pressed button (the adapter implements it)."""

    async def button_pressed(
        self, interaction: discord.Interaction[Any], user_id: int, short_id: str, label: str
    ) -> None: ...


class PayloadButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    def __init__(self, user_id: int, short_id: str, label: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.primary,
                custom_id=f"cb:{user_id}:{short_id}",
            )
        )
        self.user_id = user_id
        self.short_id = short_id
        self.label = label

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: Any,
        /,
    ) -> PayloadButton:
        label = getattr(item, "label", None) or ""
        return cls(int(match["uid"]), match["sid"], label)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler = getattr(interaction.client, "button_handler", None)
        if handler is None:  # not one of our clients; nothing sensible to do
            return
        await handler.button_pressed(interaction, self.user_id, self.short_id, self.label)


def _link_ok(url: str) -> bool:
    return len(url) <= MAX_URL and urlsplit(url).scheme in ("http", "https")


def build_view(
    buttons: Sequence[Button],
    links: Sequence[Link],
    user_id: int,
) -> tuple[discord.ui.View | None, list[str]]:
    """Components for one message, and the labels that did not fit (to list as text).

    Payload buttons first (in the backend's order), then link buttons; at most 25, laid out
    5 per row by discord.py. Duplicate payloads and unusable URLs are skipped.
    """
    view = discord.ui.View(timeout=None)
    overflow: list[str] = []
    seen: set[str] = set()
    count = 0
    for button in buttons:
        if button.url is not None:
            links = [*links, Link(label=button.label, url=button.url)]
            continue
        sid = button.id
        if sid is None:
            log.error("button without an id; button dropped")
            continue
        if sid in seen:
            continue
        seen.add(sid)
        if count >= MAX_BUTTONS:
            overflow.append(button.label)
            continue
        view.add_item(PayloadButton(user_id, sid, cut_label(button.label)))
        count += 1
    for link in links:
        if link.url in seen or not _link_ok(link.url):
            continue
        seen.add(link.url)
        if count >= MAX_BUTTONS:
            continue  # the link is in the text already
        view.add_item(discord.ui.Button(label=cut_label(link.label), url=link.url))
        count += 1
    if count == 0:
        return None, overflow
    view.stop()  # never kept in discord.py's view store: PayloadButton handles presses
    return view, overflow


def disabled_copy(message: discord.Message) -> discord.ui.View:
    """The message's components with every payload button disabled (links keep working)."""
    view = discord.ui.View.from_message(message, timeout=None)
    for item in view.children:
        if isinstance(item, discord.ui.Button) and item.url is None:
            item.disabled = True
    view.stop()
    return view
