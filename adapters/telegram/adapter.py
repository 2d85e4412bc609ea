"""The Telegram adapter: python-telegram-bot 22.x in, engine turns out, replies streamed back.

Several bots run in one process, so nothing here owns the event loop (no ``run_polling``):
the PTB Application is initialised and started by hand, fed by the Updater's long polling or
by our webhook listener. Updates of one chat are handled in order (:mod:`.ordering`); each
turn is handed to :meth:`core.protocols.TurnSubmitter.submit`, which keeps per-conversation order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from telegram import CallbackQuery, Message, Update
from telegram.constants import ChatType, MessageEntityType
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ContextTypes, TypeHandler
from telegram.request import HTTPXRequest

from chatbridge.adapters.telegram.commands import (
    CommandContext,
    Commands,
    menu_languages,
    public_commands,
)
from chatbridge.adapters.telegram.gate import AiohttpRequest
from chatbridge.adapters.telegram.html import escape, visible_length
from chatbridge.adapters.telegram.keyboards import pressed_label, short_id_of
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.adapters.telegram.ordering import PerChatUpdateProcessor
from chatbridge.adapters.telegram.surface import (
    MAX_TEXT,
    ChatPacer,
    Stats,
    Target,
    TelegramOps,
    TelegramReply,
)
from chatbridge.adapters.telegram.webhook import WebhookServer
from chatbridge.core.access import AccessGate, AccessPolicy, Facts, Verdict
from chatbridge.core.errors import StartupFailed
from chatbridge.core.images import ImageRejected, check_size, load_image
from chatbridge.core.protocols import Conversations, PlatformMetrics
from chatbridge.core.secrets import register_secret, safe_error
from chatbridge.core.streaming import RateLimited
from chatbridge.core.texts import Catalogue
from chatbridge.core.types import ConversationKey, Image, Inbound, TurnResult

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query"]
_OTHER_MEDIA = (
    "video",
    "voice",
    "audio",
    "sticker",
    "animation",
    "video_note",
    "location",
    "contact",
    "poll",
)


class _TrackedRequest(HTTPXRequest):
    """The long-poll request; remembers whether the last getUpdates reached Telegram."""

    ok = False

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        try:
            code, payload = await super().do_request(*args, **kwargs)
        except Exception:
            self.ok = False
            raise
        self.ok = code < 500
        return code, payload


@dataclass
class _Album:
    messages: list[Message] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class TelegramAdapter:
    def __init__(
        self,
        *,
        name: str,
        token: str,
        engine: Conversations,
        options: TelegramOptions,
        admins: frozenset[int],
        metrics: PlatformMetrics | None = None,
        access: AccessGate | None = None,
    ) -> None:
        register_secret(token)
        # who may talk to the bot (core/access.py); the default is open, mentions in groups
        self._access = access or AccessGate(
            name, "telegram", AccessPolicy.build(admins=admins, group_policy=options.group_reply)
        )
        secret = options.webhook_secret_token
        self._secret = secret.get_secret_value() if secret else secrets.token_urlsafe(32)
        register_secret(self._secret)
        self.name = name
        self._token = token
        self._engine = engine
        self._options = options
        self._admins = admins
        self._processor = PerChatUpdateProcessor()
        self._pacer = ChatPacer(options.stream_interval)
        self.stats = Stats(bot=name, metrics=metrics)
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._ops: TelegramOps | None = None
        self._commands: Commands | None = None
        self._poll_request: _TrackedRequest | None = None
        self._webhook: WebhookServer | None = None
        self._albums: dict[tuple[int, str], _Album] = {}
        self._pending: set[asyncio.Future[TurnResult]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._username = ""
        self._bot_id = 0
        self.updates_seen = 0
        self.turns_started = 0

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        if not self._running:
            return False
        if self._poll_request is not None:
            return self._poll_request.ok
        return True

    @property
    def webhook_port(self) -> int:
        """The webhook listener's port (useful with ``webhook_port = 0``)."""
        return self._webhook.port if self._webhook else 0

    async def start(self) -> None:
        opts = self._options
        request = AiohttpRequest(limit=opts.connection_pool_size, pool_timeout=opts.pool_timeout)
        builder = (
            Application.builder()
            .token(self._token)
            .base_url(opts.api_base_url)
            .base_file_url(opts.resolved_file_base_url)
            .concurrent_updates(self._processor)
            .request(request)
        )
        if opts.mode == "webhook":
            builder = builder.updater(None)
        else:
            self._poll_request = _TrackedRequest(connection_pool_size=2, read_timeout=10.0)
            builder = builder.get_updates_request(self._poll_request)
        app = builder.build()
        app.add_handler(TypeHandler(Update, self._on_update))
        app.add_error_handler(self._on_error)
        self._app = app
        try:
            await app.initialize()
            self._username = app.bot.username or ""
            self._bot_id = app.bot.id
            self._ops = TelegramOps(app.bot, self._pacer, self.stats)
            self._commands = Commands(
                bot_name=self.name,
                engine=self._engine,
                ops=self._ops,
                admins=self._admins,
                stats=self.stats,
                listing=opts.listing_command,
                counters=self._counters,
                spawn=self._spawn,
            )
            catalogue = self._engine.texts.catalogue
            for code in menu_languages(catalogue):  # one menu per locale, in its language
                await app.bot.set_my_commands(
                    public_commands(opts.listing_command, catalogue, code), language_code=code
                )
            await app.start()
            if opts.mode == "webhook":
                await self._start_webhook(app)
            else:
                assert app.updater is not None
                await app.updater.start_polling(
                    timeout=timedelta(seconds=opts.poll_timeout),
                    allowed_updates=ALLOWED_UPDATES,
                    error_callback=self._poll_error,
                )
                self._poll_request.ok = True  # type: ignore[union-attr]
        except TelegramError as exc:
            # PTB names the token in InvalidToken: never let it out in the message or the chain
            with contextlib.suppress(Exception):
                await self._shutdown_app()
            # a failed initialize() leaves PTB "not initialised", so its shutdown skips these
            for opened in (request, self._poll_request):
                if opened is not None:
                    with contextlib.suppress(Exception):
                        await opened.shutdown()
            raise _startup_failure(self.name, exc) from None
        self._running = True
        log.info("telegram bot %s (@%s) started, %s mode", self.name, self._username, opts.mode)

    async def _start_webhook(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        opts = self._options

        async def feed(data: dict[str, Any]) -> None:
            await app.update_queue.put(Update.de_json(data, app.bot))

        self._webhook = WebhookServer(
            listen=opts.webhook_listen,
            port=opts.webhook_port,
            path=opts.webhook_url_path,
            secret=self._secret,
            on_update=feed,
        )
        port = await self._webhook.start()
        url = opts.webhook_url or f"http://{opts.webhook_listen}:{port}{opts.webhook_url_path}"
        await app.bot.set_webhook(url, secret_token=self._secret, allowed_updates=ALLOWED_UPDATES)

    async def stop_receiving(self) -> None:
        """Stop taking updates but keep the bot able to send, so turns in flight can finish
        (or tell their users to resend); then :meth:`stop`. Updates not fetched yet stay on
        Telegram's server for the next process: nothing is lost across a restart."""
        self._running = False
        app = self._app
        if app is None:
            return
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if self._webhook is not None:
            await self._webhook.stop()
        for chat_id, group in list(self._albums):  # an album still gathering is a turn too
            with contextlib.suppress(Exception):
                await self._flush_album(chat_id, group)

    async def stop(self) -> None:
        await self.stop_receiving()
        app = self._app
        if app is None:
            return
        waiting: set[asyncio.Future[Any]] = {*self._pending, *self._tasks}
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self._options.stop_grace)
            for task in self._tasks & late:
                task.cancel()
        await self._shutdown_app()
        log.info("telegram bot %s stopped", self.name)

    async def _shutdown_app(self) -> None:
        app = self._app
        if app is None:
            return
        if app.running:
            await app.stop()
        await app.shutdown()
        self._app = None

    def _poll_error(self, exc: TelegramError) -> None:
        log.warning("telegram bot %s: polling failed: %s", self.name, safe_error(exc))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        if error is not None:
            log.error(
                "telegram bot %s: error handling an update: %s",
                self.name,
                safe_error(error),
                exc_info=error,
            )

    @property
    def _texts(self) -> Catalogue:
        return self._engine.texts.catalogue

    def _counters(self) -> dict[str, int]:
        return {"updates": self.updates_seen, "turns": self.turns_started}

    def _spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await job
            except Exception as exc:
                log.error("telegram bot %s: background job failed: %s", self.name, safe_error(exc))

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- updates ----------------------------------------------------------------------------

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.updates_seen += 1
        if update.callback_query is not None:
            await self._on_callback(update.callback_query)
            return
        msg = update.message
        if msg is None or msg.from_user is None or msg.from_user.is_bot:
            return
        if msg.chat.type == ChatType.CHANNEL:
            return
        # a new message ends any album still gathering in this chat: keep arrival order
        for chat_id, group in [k for k in self._albums if k[0] == msg.chat.id]:
            if group != msg.media_group_id:
                await self._flush_album(chat_id, group)
        if msg.media_group_id:
            self._add_album_part(msg)
            return
        await self._handle([msg])

    def _add_album_part(self, msg: Message) -> None:
        key = (msg.chat.id, str(msg.media_group_id))
        album = self._albums.setdefault(key, _Album())
        album.messages.append(msg)
        if album.timer is not None:
            album.timer.cancel()
        album.timer = asyncio.create_task(self._album_timer(*key))

    async def _album_timer(self, chat_id: int, group: str) -> None:
        # albums arrive as separate messages with no end marker: wait for a quiet gap
        await asyncio.sleep(self._options.album_wait)
        async with self._processor.lock(chat_id):
            await self._flush_album(chat_id, group, from_timer=True)

    async def _flush_album(self, chat_id: int, group: str, from_timer: bool = False) -> None:
        album = self._albums.pop((chat_id, group), None)
        if album is None:
            return
        if album.timer is not None and not from_timer:
            album.timer.cancel()
        await self._handle(album.messages)

    def _key(self, msg: Message, user_id: int) -> ConversationKey:
        thread = str(msg.message_thread_id) if msg.is_topic_message else None
        return ConversationKey(self.name, "telegram", str(msg.chat.id), str(user_id), thread)

    def _target(self, msg: Message, quote: bool) -> Target:
        private = msg.chat.type == ChatType.PRIVATE
        return Target(
            chat_id=msg.chat.id,
            thread_id=msg.message_thread_id if msg.is_topic_message else None,
            reply_to=msg.message_id if quote and not private else None,
            private=private,
        )

    def _command(self, text: str, msg: Message) -> tuple[str, str] | None:
        """(command, args) when ``text`` starts with a command for this bot."""
        entities = msg.entities if msg.text else msg.caption_entities
        if not entities or entities[0].type != MessageEntityType.BOT_COMMAND:
            return None
        if entities[0].offset != 0:
            return None
        word = text[1 : entities[0].length]
        name, _, target = word.partition("@")
        if target and target.lower() != self._username.lower():
            return ("", "")  # addressed to another bot
        return name.lower(), text[entities[0].length :].strip()

    def _addressed(self, msg: Message, text: str) -> bool:
        """In groups: a mention of the bot or a reply to it."""
        if self._options.group_reply == "all":
            return True
        reply = msg.reply_to_message
        if reply is not None and reply.from_user is not None and reply.from_user.id == self._bot_id:
            return True
        return bool(self._username) and f"@{self._username.lower()}" in text.lower()

    async def _handle(self, msgs: Sequence[Message]) -> None:
        first = msgs[0]
        user = first.from_user
        assert user is not None
        lead = next((m for m in msgs if m.text or m.caption), first)
        text = lead.text or lead.caption or ""
        group = first.chat.type != ChatType.PRIVATE
        command = self._command(text, lead)
        if command is not None and not command[0]:
            return
        facts = Facts(
            user=str(user.id),
            chat=str(first.chat.id),
            group=group,
            mentioned=command is not None or self._addressed(lead, text),
            language=user.language_code,
        )
        verdict, refusal = self._access.check(facts)
        if verdict is not Verdict.ALLOW:
            if refusal is not None and self._ops is not None:
                await self._ops.say(self._target(lead, quote=True), escape(refusal))
            return
        if group and self._username:
            text = _strip_mention(text, self._username)
        key = self._key(first, user.id)
        target = self._target(lead, quote=True)
        language = user.language_code
        assert self._ops is not None and self._commands is not None
        if command is not None:
            ctx = CommandContext(
                key=key,
                target=target,
                user_id=user.id,
                language=language,
                args=command[1],
                images=lambda: self._listing_images(msgs),
            )
            if await self._commands.run(command[0], ctx):
                return
        try:
            images = await self._images(msgs)
        except ImageRejected as exc:
            await self._ops.say(target, escape(self._texts.rejection(exc, language)))
            return
        if not text.strip() and not images:
            await self._ops.say(target, escape(self._texts.text("unsupported_media", language)))
            return
        inbound = Inbound(
            key=key,
            text=text.strip(),
            images=tuple(images),
            language=language,
            message_id=str(first.message_id),
        )
        self._submit(inbound, target)

    def _submit(self, inbound: Inbound, target: Target) -> None:
        assert self._ops is not None
        reply = TelegramReply(
            self._ops,
            target,
            interval=self._options.stream_interval,
            use_drafts=self._options.use_drafts,
        )
        future = self._engine.submit(inbound, reply)
        self.turns_started += 1
        self._pending.add(future)

        def done(fut: asyncio.Future[TurnResult]) -> None:
            self._pending.discard(fut)
            error = None if fut.cancelled() else fut.exception()
            if error is not None:
                log.error("telegram bot %s: turn crashed: %s", self.name, safe_error(error))

        future.add_done_callback(done)

    # --- photos -----------------------------------------------------------------------------

    async def _listing_images(self, msgs: Sequence[Message]) -> list[Image]:
        images = await self._images(msgs)
        reply = msgs[0].reply_to_message
        if not images and reply is not None:
            images = await self._images([reply])
        return images

    async def _images(self, msgs: Sequence[Message]) -> list[Image]:
        """Every photo of the messages, checked; raises :class:`ImageRejected` for the user."""
        limit = self._options.max_photo_bytes
        refs: list[tuple[str, int | None]] = []
        for m in msgs:
            if m.photo:
                largest = max(m.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
                refs.append((largest.file_id, largest.file_size))
            elif m.document is not None:
                mime = m.document.mime_type or ""
                if not mime.startswith("image/"):
                    raise ImageRejected("not a photo", "not_a_photo")
                refs.append((m.document.file_id, m.document.file_size))
            elif any(getattr(m, kind, None) for kind in _OTHER_MEDIA):
                raise ImageRejected("other media", "unsupported_media")
        for _, size in refs:
            check_size(size, limit)  # before downloading anything
        return list(await asyncio.gather(*(self._download(f, limit) for f, _ in refs)))

    async def _download(self, file_id: str, limit: int) -> Image:
        assert self._app is not None
        try:
            file = await self._app.bot.get_file(file_id)
            check_size(file.file_size, limit)
            data = bytes(await file.download_as_bytearray())
        except BadRequest as exc:
            if "too big" in str(exc).lower():
                check_size(limit + 1, limit)
            raise ImageRejected("download failed", "download_failed") from None
        except TelegramError:
            raise ImageRejected("download failed", "download_failed") from None
        return load_image(data, limit)

    # --- buttons ----------------------------------------------------------------------------

    async def _on_callback(self, query: CallbackQuery) -> None:
        data = query.data or ""
        if query.message is not None:
            private = query.message.chat.type == ChatType.PRIVATE
            facts = Facts(
                user=str(query.from_user.id),
                chat=str(query.message.chat.id),
                group=not private,
                mentioned=True,  # a press on the bot's own message
                language=query.from_user.language_code,
            )
            verdict, refusal = self._access.check(facts)
            if verdict is not Verdict.ALLOW:
                with contextlib.suppress(TelegramError):
                    await query.answer(refusal)
                return
        short_id = short_id_of(data)
        payload = await self._engine.resolve_button(short_id) if short_id is not None else None
        with contextlib.suppress(TelegramError):
            expired = self._texts.text("button_expired", query.from_user.language_code)
            await query.answer(expired if payload is None else None)
        msg = query.message
        if payload is None or not isinstance(msg, Message):
            return
        label = pressed_label(msg.reply_markup, data) or payload
        target = self._target(msg, quote=False)
        await self._show_choice(msg, target, label)
        key = ConversationKey(
            self.name,
            "telegram",
            str(msg.chat.id),
            str(query.from_user.id),
            str(msg.message_thread_id) if msg.is_topic_message else None,
        )
        inbound = Inbound(
            key=key,
            text=label,
            button_payload=payload,
            language=query.from_user.language_code,
            message_id=str(msg.message_id),
        )
        self._submit(inbound, target)

    async def _show_choice(self, msg: Message, target: Target, label: str) -> None:
        """Mark the pressed choice on the message and drop its keyboard (no double presses)."""
        assert self._ops is not None
        base = msg.text_html if msg.text else None
        text = f"{base}\n\n✅ <b>{escape(label)}</b>" if base else None
        for _ in range(4):
            try:
                if text is not None and visible_length(text) <= MAX_TEXT:
                    await self._ops.edit(target, msg.message_id, text, None)
                else:
                    await self._ops.edit_markup(target, msg.message_id, None)
                return
            except RateLimited as exc:
                await asyncio.sleep(exc.retry_after)
            except Exception as exc:  # the choice still goes through; the mark is cosmetic
                log.info("could not mark a pressed button: %s", safe_error(exc))
                return


def _startup_failure(name: str, exc: TelegramError) -> StartupFailed:
    """Why a bot could not start, phrased for the operator; network faults are retryable."""
    message = f"telegram bot {name} could not start: {safe_error(exc)}"
    if isinstance(exc, InvalidToken):
        return StartupFailed(
            message, retryable=False, hint="check the bot's token (BotFather's /token)"
        )
    if isinstance(exc, NetworkError | RetryAfter):
        return StartupFailed(
            message,
            retryable=True,
            hint="check the network and the bot's api_base_url (is the Bot API reachable?)",
        )
    return StartupFailed(message, retryable=False, hint="see the Bot API's answer above")


def _strip_mention(text: str, username: str) -> str:
    lowered = text.lower()
    mention = f"@{username.lower()}"
    i = lowered.find(mention)
    if i < 0:
        return text
    return (text[:i] + text[i + len(mention) :]).strip()
