"""The :class:`core.protocols.Surface` of one turn in one Telegram chat.

The pieces it is drawn with live beside it: the Bot API calls and their pacing
(:mod:`.api`, on the bot's shared :class:`core.pacer.Pacer`), the sinks that show a stream
(:mod:`.sinks`), keyboards (:mod:`.keyboards`) and counters (:mod:`.stats`). The timer,
coalescing and splitting of streamed text are :class:`core.streaming.ThrottledStream`'s.

Private chats stream through drafts (not counted by Telegram's limits); when the final answer
has to wait for the bot's budget, its full text shows in the draft meanwhile (refreshed before
a draft's 30 s life ends), so the user reads the answer while the real message queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from telegram import InlineKeyboardMarkup

from chatbridge.adapters.telegram.api import MAX_TEXT, Target, TelegramOps
from chatbridge.adapters.telegram.html import (
    escape,
    render_body,
    split_html,
    to_text,
    visible_length,
)
from chatbridge.adapters.telegram.keyboards import build_keyboard
from chatbridge.adapters.telegram.sinks import DraftSink, Handle, MessageSink
from chatbridge.core.errors import DeliveryRefused
from chatbridge.core.pacer import STREAM
from chatbridge.core.retry import deliver
from chatbridge.core.streaming import ThrottledStream
from chatbridge.core.types import ReplyMessage

__all__ = ["MAX_TEXT", "TelegramReply", "render"]

log = logging.getLogger(__name__)

TYPING_GRACE = 0.4  # seconds without visible text before "typing..." is shown
DRAFT_REFRESH = 20.0  # seconds; Telegram drops a draft 30 s after its last update
DRAFT_FIRST = 1.0  # seconds a final waits for the bot's budget before its draft shows it


def render(message: ReplyMessage) -> str:
    """A reply message as Telegram HTML."""
    return render_body(message.body)


class TelegramReply:
    """The :class:`core.protocols.Surface` of one turn in one Telegram chat."""

    def __init__(
        self,
        ops: TelegramOps,
        target: Target,
        *,
        interval: float,
        use_drafts: bool,
        choose_hint: str,
    ) -> None:
        self.ops = ops
        # shown, in the user's language, when an answer is only buttons (Telegram needs text)
        self.choose_hint = choose_hint
        self.target = target
        self.interval = interval
        self.shown = asyncio.Event()
        self.first_shown_at: float | None = None
        self._sink = MessageSink(ops, target, self._mark_shown, self.shown.is_set)
        self._drafts = DraftSink(ops, self._sink) if use_drafts and target.private else None
        self._stream: ThrottledStream[Handle] | None = None
        self._typing: asyncio.Task[None] | None = None
        self._typing_timer: asyncio.TimerHandle | None = None

    def _mark_shown(self) -> None:
        if not self.shown.is_set():
            self.first_shown_at = time.monotonic()
            self.shown.set()

    def _new_stream(self, sink: MessageSink | DraftSink) -> ThrottledStream[Handle]:
        messages = isinstance(sink, MessageSink)  # drafts are not counted by Telegram
        return ThrottledStream(
            sink,
            interval=self.interval,
            max_len=MAX_TEXT,
            length=visible_length,
            split=split_html,
            pacer=self.ops.pacer if messages else self.ops.drafts,
            lane=self.target.lane if messages else None,
            deadline=self.ops.deadline,
        )

    def _preview(self) -> ThrottledStream[Handle]:
        if self._stream is None:
            self._stream = self._new_stream(self._drafts or self._sink)
        return self._stream

    async def begin(self) -> None:
        # a reply that shows within the grace needs no typing indicator (skipping it saves a
        # request per turn exactly when many chats start together), and no task either: a
        # timer starts the typing loop only once the grace has passed with nothing shown
        loop = asyncio.get_running_loop()
        self._typing_timer = loop.call_later(TYPING_GRACE, self._start_typing)

    def _draft_on_its_way(self) -> bool:
        """Text is streaming into a draft: its first update is an urgent request, ahead of any
        chat action, so "typing..." could only arrive after it (and would cost a request when
        a thousand chats start at once)."""
        drafts = self._drafts
        return drafts is not None and not drafts.broken and self._stream is not None

    def _start_typing(self) -> None:
        self._typing_timer = None
        if not self.shown.is_set() and not self._draft_on_its_way():
            self._typing = asyncio.create_task(self._keep_typing(), name="telegram-typing")

    async def _keep_typing(self) -> None:
        while not self.shown.is_set():
            await self.ops.typing(self.target)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shown.wait(), 4.5)  # the action lasts ~5 s

    def _stop_typing(self) -> None:
        if self._typing_timer is not None:
            self._typing_timer.cancel()
            self._typing_timer = None
        if self._typing is not None:
            self._typing.cancel()
            self._typing = None

    async def append(self, text: str) -> None:
        # "typing..." stops once text shows (``shown``), not before: under pressure the first
        # message may wait its turn in the bot's budget for many seconds
        await self._preview().append(escape(text))

    async def replace(self, text: str) -> None:
        await self._preview().replace(escape(text))

    async def notice(self, text: str) -> None:
        await self.ops.say(self.target, f"<i>{escape(text)}</i>", quote=False)

    def _final_stream(self) -> ThrottledStream[Handle]:
        """The stream that delivers the final text as real messages."""
        if self._stream is not None and (self._drafts is None or self._drafts.broken):
            return self._stream
        return self._new_stream(self._sink)

    async def _deliver(
        self,
        stream: ThrottledStream[Handle],
        sink: MessageSink,
        html: str,
        markup: InlineKeyboardMarkup | None,
    ) -> None:
        pieces = split_html(html, MAX_TEXT)
        sink.markup = (pieces[-1], markup) if markup is not None else None
        sink.markup_on = None
        keepalive = self._draft_final(pieces[0], sink) if stream is not self._stream else None
        try:
            handles = await stream.finish(html)
        finally:
            if keepalive is not None:
                keepalive.cancel()
        if markup is not None and sink.markup_on is None and handles:
            message_id = handles[-1].message_id
            if message_id is not None:  # the text was already right: add the keyboard
                await deliver(
                    lambda: self.ops.edit_markup(self.target, message_id, markup),
                    what="a keyboard",
                    deadline=self.ops.deadline,
                )

    def _draft_final(self, text: str, sink: MessageSink) -> asyncio.Task[None] | None:
        """While the final message waits for the bot's budget, show its text as the draft."""
        if self._drafts is None or self._drafts.broken or self._stream is None:
            return None
        drafts = self._drafts

        async def keep() -> None:
            await asyncio.sleep(DRAFT_FIRST)  # a final that goes at once needs no draft
            while not sink.writing:
                try:
                    # the user already reads the streamed text: other chats' first go first
                    await self.ops.draft(self.target, drafts.draft_id, text, priority=STREAM)
                except Exception:  # cosmetic: the final message is on its way regardless
                    log.debug("draft refresh failed", exc_info=True)
                    return
                await asyncio.sleep(DRAFT_REFRESH)

        return asyncio.create_task(keep(), name="telegram-final-draft")

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        try:
            await self._finish(messages)
        finally:
            self._stop_typing()  # (it stopped by itself if anything showed)

    async def _finish(self, messages: Sequence[ReplyMessage]) -> None:
        stream = self._final_stream()
        if self._stream is not None and stream is not self._stream:
            await self._stream.abort()  # drafts vanish by themselves once the message lands
        delivered = 0
        for message in messages:
            html = render(message)
            markup = build_keyboard(message.buttons, message.links, html)
            if not to_text(html).strip():
                if markup is None:
                    continue
                html = escape(self.choose_hint)
            if delivered:  # the first message replaces the preview; the others are new
                self._sink = MessageSink(self.ops, self.target, self._mark_shown, self.shown.is_set)
                self._sink.quoted = True
                stream = self._new_stream(self._sink)
            await self._deliver(stream, self._sink, html, markup)
            delivered += 1

    async def fail(self, text: str) -> None:
        self._stop_typing()
        try:
            stream = self._final_stream()
            if self._stream is not None and stream is not self._stream:
                await self._stream.abort()
            await stream.finish(escape(text))
        except DeliveryRefused:
            raise  # refused for good (bot blocked, chat gone): the journal records it
        except Exception as exc:  # nothing else can reach the user: log it, never raise
            log.error(
                "could not tell chat %s that a turn failed: %s",
                self.target.chat_id,
                type(exc).__name__,
            )

    async def close(self) -> None:
        self._stop_typing()
        if self._stream is not None:
            await self._stream.abort()
