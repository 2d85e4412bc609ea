"""The two ways a streamed reply shows in a Telegram chat (``core.streaming.MessageSink``s).

:class:`MessageSink` posts real messages and edits them; :class:`DraftSink` shows private
chats an ephemeral ``sendMessageDraft`` preview (not counted by Telegram's flood limits) and
falls back to messages where drafts are refused.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from telegram import InlineKeyboardMarkup
from telegram.error import BadRequest

from chatbridge.adapters.telegram.api import MessageGone, Target, TelegramOps
from chatbridge.adapters.telegram.gate import urgent

log = logging.getLogger(__name__)


@dataclass
class Handle:
    message_id: int | None = None  # None while only a draft (or nothing) shows
    draft: bool = False


class MessageSink:
    """Real messages: send, then edit. Puts the final keyboard on the final piece."""

    def __init__(
        self,
        ops: TelegramOps,
        target: Target,
        on_shown: Callable[[], None],
        shown: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ops = ops
        self.target = target
        self.on_shown = on_shown
        self.shown = shown
        self.quoted = False
        self.markup: tuple[str, InlineKeyboardMarkup] | None = None  # (last piece, keyboard)
        self.markup_on: int | None = None
        self.writing = False  # a send or edit was started (a draft refresh would come late)

    def _markup_for(self, text: str) -> InlineKeyboardMarkup | None:
        if self.markup is not None and self.markup[0] == text:
            return self.markup[1]
        return None

    async def send(self, text: str) -> Handle:
        handle = Handle()
        await self._send_into(handle, text)
        return handle

    async def _send_into(self, handle: Handle, text: str) -> None:
        self.writing = True
        markup = self._markup_for(text)
        with urgent():  # a new message: the user is waiting for it
            handle.message_id = await self.ops.send(
                self.target, text, markup, quote=not self.quoted
            )
        handle.draft = False
        self.quoted = True
        if markup is not None:
            self.markup_on = handle.message_id
        self.on_shown()

    async def edit(self, handle: Handle, text: str) -> None:
        if handle.message_id is None:
            await self._send_into(handle, text)
            return
        self.writing = True
        markup = self._markup_for(text)
        try:
            await self.ops.edit(self.target, handle.message_id, text, markup)
        except MessageGone:
            await self._send_into(handle, text)
            return
        if markup is not None:
            self.markup_on = handle.message_id


class DraftSink:
    """Private chats: ephemeral sendMessageDraft previews; falls back to messages if refused."""

    def __init__(self, ops: TelegramOps, fallback: MessageSink) -> None:
        self.ops = ops
        self.fallback = fallback
        self.draft_id = random.randint(1, 2**31 - 1)
        self.broken = False

    async def send(self, text: str) -> Handle:
        handle = Handle(draft=True)
        await self.edit(handle, text)
        return handle

    async def edit(self, handle: Handle, text: str) -> None:
        if handle.draft and not self.broken:
            try:
                if self.fallback.shown():
                    await self.ops.draft(self.fallback.target, self.draft_id, text)
                else:
                    with urgent():  # the first preview: the user is waiting for it
                        await self.ops.draft(self.fallback.target, self.draft_id, text)
                self.fallback.on_shown()
                return
            except BadRequest as exc:
                self.broken = True
                log.info(
                    "drafts refused in chat %s (%s): editing messages instead",
                    self.fallback.target.chat_id,
                    exc,
                )
        await self.fallback.edit(handle, text)
