"""Bot API calls for replies: paced by the bot's shared budget, errors in the engine's terms.

Every message-making call (send, edit) first spends a permit of the bot's
:class:`core.pacer.Pacer` (one per bot token: ~30 messages/s for the bot, 20/min per group,
``chat_rate``/``chat_burst`` per chat), so the platform's flood limits are met before it has
to say so. Telegram errors become what the streaming helper and the retry helper understand:
429 -> :class:`RateLimited`, timeouts and 5xx -> :class:`PlatformUnavailable`, a blocked bot or
a vanished chat -> :class:`DeliveryRefused` (logged and counted here, once).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from telegram import Bot, InlineKeyboardMarkup, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from chatbridge.adapters.telegram.gate import urgent
from chatbridge.adapters.telegram.html import split_html, to_text
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.adapters.telegram.stats import Stats
from chatbridge.core.errors import DeliveryRefused, PlatformUnavailable, RateLimited
from chatbridge.core.pacer import URGENT, Lane, Limit, Pacer, TokenBucket, Window
from chatbridge.core.retry import DEFAULT_DELIVERY_DEADLINE, deliver

log = logging.getLogger(__name__)

MAX_TEXT = 4096
# BadRequest descriptions that mean the chat cannot be written to, now or later
_GONE = (
    "chat not found",
    "chat_write_forbidden",
    "have no rights",
    "not enough rights",
    "group chat was deactivated",
    "user is deactivated",
    "peer_id_invalid",
)


def retry_seconds(exc: RetryAfter) -> float:
    value = getattr(exc, "_retry_after", None)  # timedelta; the public int form is deprecated
    if value is not None:
        return float(value.total_seconds())
    return 1.0


def telegram_pacer(options: TelegramOptions) -> Pacer:
    """The send budget of one bot token, from its options."""
    bot = None
    if options.bot_rate > 0:
        # streaming edits may use four fifths: finals and first messages always find room
        bot = Window(options.bot_rate, 1.0, stream_limit=max(1, options.bot_rate * 4 // 5))

    def chat(group: bool) -> list[Limit]:
        windows: list[Limit] = []
        if options.chat_rate > 0:
            burst = options.chat_burst
            # a streaming edit leaves one message of the burst for the final answer
            windows.append(TokenBucket(options.chat_rate, burst, stream_burst=burst - 1))
        if group and options.group_rate > 0:
            windows.append(
                Window(options.group_rate, 60.0, stream_limit=max(1, options.group_rate - 4))
            )
        return windows

    return Pacer(bot, chat)


def draft_pacer(options: TelegramOptions) -> Pacer | None:
    """The process's own budget for draft updates: streaming ones only (a first draft, the
    user's first sight of an answer, passes at once but counts). Streaming updates are spread
    evenly: a second's worth granted at once would fill every request slot just as other
    chats' first drafts need them."""
    if options.draft_rate <= 0:
        return None
    rate = options.draft_rate
    return Pacer(Window(1_000_000, 1.0, stream_limit=rate, stream_spacing=1.0 / rate))


@dataclass(frozen=True)
class Target:
    """Where a reply goes."""

    chat_id: int
    thread_id: int | None = None
    reply_to: int | None = None  # the user's message (groups), quoted by the first message
    private: bool = False

    @functools.cached_property
    def lane(self) -> Lane:  # asked at every call of a turn: built once
        return Lane(self.chat_id, group=not self.private)


class MessageGone(Exception):
    """The message to edit no longer exists (deleted by the user)."""


class TelegramOps:
    """Paced Bot API calls that translate Telegram errors for the streaming helper."""

    def __init__(
        self,
        bot: Bot,
        pacer: Pacer,
        stats: Stats,
        *,
        deadline: float = DEFAULT_DELIVERY_DEADLINE,
        drafts: Pacer | None = None,
    ) -> None:
        self.bot = bot
        self.pacer = pacer
        self.stats = stats
        self.deadline = deadline
        self.drafts = drafts  # see draft_pacer()
        # a group upgraded to a supergroup gets a new id: its answers follow it there
        self.migrated: dict[int, int] = {}

    def chat_id(self, target: Target) -> int:
        """Where ``target``'s messages go now."""
        chat_id = target.chat_id
        while chat_id in self.migrated:
            chat_id = self.migrated[chat_id]
        return chat_id

    async def _call(self, target: Target, op: Callable[[], Awaitable[object]]) -> object:
        # a counted call holds a share of the bot's budget: it goes first in the transport too
        async with self.pacer.spend(target.lane, URGENT):
            with urgent():
                return await self._translated(target, op)

    async def _translated(self, target: Target, op: Callable[[], Awaitable[object]]) -> object:
        chat_id = target.chat_id
        try:
            return await op()
        except RetryAfter as exc:
            seconds = retry_seconds(exc)
            self.stats.limited()
            self.pacer.hold(target.lane, seconds)
            log.warning("telegram 429 in chat %s: retry after %.0f s", chat_id, seconds)
            raise RateLimited(seconds) from None
        except ChatMigrated as exc:
            self.migrated[self.chat_id(target)] = int(exc.new_chat_id)
            log.info("telegram chat %s became %s: answering there", chat_id, exc.new_chat_id)
            raise RateLimited(0.0) from None  # try again at once, in the new chat
        except Forbidden as exc:
            raise self._refused(chat_id, exc) from None
        except BadRequest as exc:
            if any(reason in str(exc).lower() for reason in _GONE):
                raise self._refused(chat_id, exc) from None
            raise
        except NetworkError as exc:
            # a timeout or a 5xx: worth another try after a pause, rather than losing the answer
            self.stats.network_errors += 1
            log.warning("telegram call failed in chat %s (%s)", chat_id, type(exc).__name__)
            raise PlatformUnavailable(type(exc).__name__) from None

    def _refused(self, chat_id: int, exc: TelegramError) -> DeliveryRefused:
        self.stats.delivery_refused()
        log.warning("telegram refused delivery to chat %s for good: %s", chat_id, exc.message)
        return DeliveryRefused(exc.message)

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
                self.chat_id(target),
                text if parse else to_text(text),
                parse_mode=ParseMode.HTML if parse else None,
                message_thread_id=target.thread_id,
                reply_markup=markup,
                reply_parameters=reply,
                link_preview_options=None,
            )

        try:
            message = await self._call(target, op)
        except BadRequest as exc:
            if "parse entities" not in str(exc).lower():
                raise
            log.warning("telegram refused our HTML (%s); sending plain text", exc)
            message = await self._call(target, lambda: op(False))
        self.stats.sent()
        return int(message.message_id)  # type: ignore[attr-defined]

    async def edit(
        self, target: Target, message_id: int, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        async def op(parse: bool = True) -> object:
            return await self.bot.edit_message_text(
                text if parse else to_text(text),
                self.chat_id(target),
                message_id,
                parse_mode=ParseMode.HTML if parse else None,
                reply_markup=markup,
            )

        try:
            await self._call(target, op)
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
                await self._call(target, lambda: op(False))
        self.stats.edited()

    async def edit_markup(
        self, target: Target, message_id: int, markup: InlineKeyboardMarkup | None
    ) -> None:
        try:
            await self._call(
                target,
                lambda: self.bot.edit_message_reply_markup(
                    self.chat_id(target), message_id, reply_markup=markup
                ),
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    async def draft(
        self, target: Target, draft_id: int, text: str, *, priority: int = URGENT
    ) -> None:
        """A sendMessageDraft preview (private chats; not counted by Telegram's limits)."""

        def op() -> Awaitable[object]:
            return self.bot.send_message_draft(
                self.chat_id(target),
                draft_id,
                text,
                message_thread_id=target.thread_id,
                parse_mode=ParseMode.HTML,
            )

        if self.drafts is None:
            await self._translated(target, op)
        else:
            async with self.drafts.spend(None, priority):
                await self._translated(target, op)
        self.stats.edited(draft=True)

    async def typing(self, target: Target) -> None:
        with contextlib.suppress(TelegramError):
            await self.bot.send_chat_action(
                self.chat_id(target), ChatAction.TYPING, message_thread_id=target.thread_id
            )

    async def say(
        self,
        target: Target,
        text: str,
        markup: InlineKeyboardMarkup | None = None,
        *,
        quote: bool = True,
    ) -> int | None:
        """Send one whole message (commands, notices), split, retried until delivered."""
        message_id = None
        for i, piece in enumerate(split_html(text, MAX_TEXT)):

            async def send(piece: str = piece, first: bool = i == 0) -> int:
                return await self.send(target, piece, markup, quote=quote and first)

            message_id = await deliver(send, what="a message", deadline=self.deadline)
        return message_id
