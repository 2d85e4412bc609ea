"""Drawing one reply in a Telegram chat: pacing, drafts, edits, keyboards.

Telegram allows about one message or edit per second per chat and punishes bursts with long
bans, so every send/edit in a chat goes through :class:`ChatPacer` (one at a time per chat,
``interval`` apart, a 429 holds the chat for its ``retry_after``). The timer, coalescing and
splitting of streamed text are :class:`core.streaming.ThrottledStream`'s; this module only
supplies the platform operations (sinks) and the rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from telegram import Bot, InlineKeyboardMarkup, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from chatbridge.adapters.telegram.gate import urgent
from chatbridge.adapters.telegram.html import (
    escape,
    render_body,
    split_html,
    to_text,
    visible_length,
)
from chatbridge.adapters.telegram.keyboards import build_keyboard
from chatbridge.core.protocols import PlatformMetrics
from chatbridge.core.streaming import RateLimited, ThrottledStream
from chatbridge.core.types import ReplyMessage

log = logging.getLogger(__name__)

MAX_TEXT = 4096
EMPTY_WITH_KEYBOARD = "Please choose an option below."
NETWORK_RETRY = 1.0  # seconds before retrying a call that timed out or met a 5xx
TYPING_GRACE = 0.4  # seconds without visible text before "typing..." is shown


def retry_seconds(exc: RetryAfter) -> float:
    value = getattr(exc, "_retry_after", None)  # timedelta; the public int form is deprecated
    if value is not None:
        return float(value.total_seconds())
    return 1.0


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_at: float = 0.0
    users: int = 0


class ChatPacer:
    """One message operation at a time per chat, at least ``interval`` apart."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slots: dict[int, _Slot] = {}

    @contextlib.asynccontextmanager
    async def slot(self, chat_id: int) -> AsyncIterator[None]:
        slot = self._slots.get(chat_id)
        if slot is None:
            if len(self._slots) > 10_000:
                self._prune()
            slot = self._slots[chat_id] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                delay = slot.next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    yield
                finally:
                    # measured from the answer: the next request reaches Telegram >= interval
                    # after this one did, whatever the network jitter
                    slot.next_at = max(slot.next_at, time.monotonic() + self.interval)
        finally:
            slot.users -= 1

    def hold(self, chat_id: int, seconds: float) -> None:
        slot = self._slots.setdefault(chat_id, _Slot())
        slot.next_at = max(slot.next_at, time.monotonic() + seconds)

    def _prune(self) -> None:
        now = time.monotonic()
        for chat_id, slot in list(self._slots.items()):
            if slot.users == 0 and slot.next_at < now:
                del self._slots[chat_id]


@dataclass(frozen=True)
class Target:
    """Where a reply goes."""

    chat_id: int
    thread_id: int | None = None
    reply_to: int | None = None  # the user's message (groups), quoted by the first message
    private: bool = False


@dataclass
class Stats:
    """Platform calls of one bot; also reported to the process metrics when there are any."""

    rate_limited: int = 0
    messages_sent: int = 0
    edits: int = 0
    drafts: int = 0
    network_errors: int = 0
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


class MessageGone(Exception):
    """The message to edit no longer exists (deleted by the user)."""


class TelegramOps:
    """Paced Bot API calls that translate Telegram errors for the streaming helper."""

    def __init__(self, bot: Bot, pacer: ChatPacer, stats: Stats) -> None:
        self.bot = bot
        self.pacer = pacer
        self.stats = stats

    async def _call(self, chat_id: int, op: Callable[[], Awaitable[object]]) -> object:
        async with self.pacer.slot(chat_id):
            try:
                return await op()
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                self.stats.limited()
                self.pacer.hold(chat_id, seconds)
                log.warning("telegram 429 in chat %s: retry after %.0f s", chat_id, seconds)
                raise RateLimited(seconds) from None
            except NetworkError as exc:
                if isinstance(exc, BadRequest):
                    raise
                # a timeout or a 5xx: worth another try after a pause (the streaming helper and
                # say() retry RateLimited), rather than losing the answer
                self.stats.network_errors += 1
                log.warning(
                    "telegram call failed in chat %s (%s); retrying", chat_id, type(exc).__name__
                )
                raise RateLimited(NETWORK_RETRY) from None

    async def send(
        self,
        target: Target,
        text: str,
        markup: InlineKeyboardMarkup | None = None,
        *,
        quote: bool = False,
    ) -> int:
        reply = (
            ReplyParameters(target.reply_to, allow_sending_without_reply=True)
            if quote and target.reply_to
            else None
        )

        async def op(parse: bool = True) -> object:
            return await self.bot.send_message(
                target.chat_id,
                text if parse else to_text(text),
                parse_mode=ParseMode.HTML if parse else None,
                message_thread_id=target.thread_id,
                reply_markup=markup,
                reply_parameters=reply,
                link_preview_options=None,
            )

        try:
            message = await self._call(target.chat_id, op)
        except BadRequest as exc:
            if "parse entities" not in str(exc).lower():
                raise
            log.warning("telegram refused our HTML (%s); sending plain text", exc)
            message = await self._call(target.chat_id, lambda: op(False))
        self.stats.sent()
        return int(message.message_id)  # type: ignore[attr-defined]

    async def edit(
        self, target: Target, message_id: int, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        async def op(parse: bool = True) -> object:
            return await self.bot.edit_message_text(
                text if parse else to_text(text),
                target.chat_id,
                message_id,
                parse_mode=ParseMode.HTML if parse else None,
                reply_markup=markup,
            )

        try:
            await self._call(target.chat_id, op)
        except BadRequest as exc:
            reason = str(exc).lower()
            if "not modified" in reason:
                return  # Telegram trims whitespace: "unchanged" to it may differ to us
            if "not found" in reason:
                raise MessageGone from None
            if "parse entities" not in reason:
                raise
            log.warning("telegram refused our HTML (%s); editing with plain text", exc)
            with contextlib.suppress(BadRequest):
                await self._call(target.chat_id, lambda: op(False))
        self.stats.edited()

    async def edit_markup(
        self, target: Target, message_id: int, markup: InlineKeyboardMarkup | None
    ) -> None:
        try:
            await self._call(
                target.chat_id,
                lambda: self.bot.edit_message_reply_markup(
                    target.chat_id, message_id, reply_markup=markup
                ),
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    async def draft(self, target: Target, draft_id: int, text: str) -> None:
        try:
            await self.bot.send_message_draft(
                target.chat_id,
                draft_id,
                text,
                message_thread_id=target.thread_id,
                parse_mode=ParseMode.HTML,
            )
        except RetryAfter as exc:
            self.stats.limited()
            raise RateLimited(retry_seconds(exc)) from None
        self.stats.edited(draft=True)

    async def typing(self, target: Target) -> None:
        with contextlib.suppress(TelegramError):
            await self.bot.send_chat_action(
                target.chat_id, ChatAction.TYPING, message_thread_id=target.thread_id
            )

    async def say(
        self,
        target: Target,
        text: str,
        markup: InlineKeyboardMarkup | None = None,
        *,
        quote: bool = True,
    ) -> int | None:
        """Send one whole message (commands, refusals), split and retried as needed."""
        message_id = None
        for i, piece in enumerate(split_html(text, MAX_TEXT)):
            for _ in range(6):
                try:
                    message_id = await self.send(target, piece, markup, quote=quote and i == 0)
                    break
                except RateLimited as exc:
                    await asyncio.sleep(exc.retry_after)
        return message_id


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

    def _markup_for(self, text: str) -> InlineKeyboardMarkup | None:
        if self.markup is not None and self.markup[0] == text:
            return self.markup[1]
        return None

    async def send(self, text: str) -> Handle:
        handle = Handle()
        await self._send_into(handle, text)
        return handle

    async def _send_into(self, handle: Handle, text: str) -> None:
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
    ) -> None:
        self.ops = ops
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
        return ThrottledStream(
            sink, interval=self.interval, max_len=MAX_TEXT, length=visible_length, split=split_html
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

    def _start_typing(self) -> None:
        self._typing_timer = None
        if not self.shown.is_set():
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
        self._stop_typing()  # the answer is coming: our own send follows at once
        await self._preview().append(escape(text))

    async def replace(self, text: str) -> None:
        self._stop_typing()
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
        handles = await stream.finish(html)
        if markup is not None and sink.markup_on is None and handles:
            last = handles[-1]
            if last.message_id is not None:  # the text was already right: add the keyboard
                for _ in range(6):
                    try:
                        await self.ops.edit_markup(self.target, last.message_id, markup)
                        break
                    except RateLimited as exc:
                        await asyncio.sleep(exc.retry_after)

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        self._stop_typing()
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
                html = escape(EMPTY_WITH_KEYBOARD)
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
