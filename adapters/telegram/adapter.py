"""The Telegram adapter: python-telegram-bot 22.x in, engine turns out, replies streamed back.

Several bots run in one process, so nothing here owns the event loop (no ``run_polling``):
the PTB Application is initialised and started by hand, fed by our own long polling
(:mod:`.polling`) or our webhook listener. Each message is handed to
:meth:`core.protocols.TurnSubmitter.accept`, which keeps each conversation's arrival order and
writes the message down before the poller confirms it or the webhook answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from telegram import Bot, CallbackQuery, Message, Update
from telegram.constants import ChatType
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application

from chatbridge.adapters.telegram.addressing import (
    addressed,
    command_of,
    conversation_key,
    reply_target,
    stored_target,
    strip_mention,
)
from chatbridge.adapters.telegram.albums import Albums
from chatbridge.adapters.telegram.api import (
    MAX_TEXT,
    Target,
    TelegramOps,
    draft_pacer,
    telegram_pacer,
)
from chatbridge.adapters.telegram.commands import (
    CommandContext,
    Commands,
    menu_languages,
    public_commands,
)
from chatbridge.adapters.telegram.gate import BotApiRequest
from chatbridge.adapters.telegram.html import escape, visible_length
from chatbridge.adapters.telegram.keyboards import pressed_label, short_id_of
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.adapters.telegram.photos import listing_images, message_images
from chatbridge.adapters.telegram.polling import Poller
from chatbridge.adapters.telegram.stats import Stats
from chatbridge.adapters.telegram.surface import TelegramReply
from chatbridge.core.access import AccessGate, AccessPolicy, Facts, Verdict
from chatbridge.core.errors import StartupFailed, best_effort
from chatbridge.core.images import ImageRejected
from chatbridge.core.pacer import SharedWindows
from chatbridge.core.protocols import Conversations, PlatformMetrics, Prepared, Surface
from chatbridge.core.retry import deliver
from chatbridge.core.secrets import register_secret, safe_error
from chatbridge.core.texts import Catalogue
from chatbridge.core.types import ConversationKey, Inbound, TurnResult

if TYPE_CHECKING:
    from chatbridge.adapters.telegram.webhook import WebhookServer

log = logging.getLogger(__name__)

# Several replicas: elect(name, on_gain, on_lose) runs on_gain while this replica holds the
# lease ``name`` (core.replicas.Replicas.leader)
Elect = Callable[[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]], object]

ALLOWED_UPDATES = ["message", "callback_query"]
CHOICE_MARK_DEADLINE = 60.0  # seconds: marking a pressed button is cosmetic, not an answer


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
        budget: SharedWindows | None = None,
        elect: Elect | None = None,
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
        self._pacer = telegram_pacer(options)  # one budget for every chat of this token
        self._pacer.shared = budget  # several replicas: the token's budget counted in Redis
        self._elect = elect
        self._receiving = True
        self.stats = Stats(bot=name, metrics=metrics)
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._ops: TelegramOps | None = None
        self._commands: Commands | None = None
        self._poller: Poller | None = None
        self._recovered = asyncio.Event()  # the webhook takes updates only after recovery
        self._webhook: WebhookServer | None = None
        self._albums = Albums(options.album_wait)
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
        if self._poller is not None:
            return self._poller.ok
        return True

    @property
    def webhook_port(self) -> int:
        """The webhook listener's port (useful with ``webhook_port = 0``)."""
        return self._webhook.port if self._webhook else 0

    async def start(self) -> None:
        opts = self._options
        request = BotApiRequest(limit=opts.connection_pool_size, pool_timeout=opts.pool_timeout)
        builder = (
            Application.builder()
            .token(self._token)
            .base_url(opts.api_base_url)
            .base_file_url(opts.resolved_file_base_url)
            .request(request)
        )
        # no PTB Updater: it confirms updates before they are handled (see .polling)
        builder = builder.updater(None)
        poll_request: BotApiRequest | None = None
        if opts.mode == "polling":
            # the long poll has its own connections, so it never waits behind replies; the
            # same transport as every other call (PTB's HTTPX one cost ~1 ms of CPU per update)
            poll_request = BotApiRequest(limit=2, read_timeout=10.0)
            builder = builder.get_updates_request(poll_request)
        app = builder.build()
        self._app = app
        try:
            await app.initialize()
            self._username = app.bot.username or ""
            self._bot_id = app.bot.id
            self._ops = TelegramOps(
                app.bot,
                self._pacer,
                self.stats,
                deadline=opts.delivery_deadline,
                drafts=draft_pacer(opts),
            )
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
                # what a previous run left unfinished goes first: the listener holds updates
                # (and its 200) until then
                await self._engine.recover(self)
                self._recovered.set()
            else:
                await app.bot.delete_webhook()
                # what a previous run left unfinished goes first, before any new update
                await self._engine.recover(self)
                if self._elect is None:
                    await self._start_polling()
                else:
                    # several replicas: only the lease holder polls (two pollers of one
                    # token get 409 Conflict); the others run the turns it queues
                    self._elect(
                        f"telegram-poll:{self.name}", self._start_polling, self._stop_polling
                    )
        except TelegramError as exc:
            # PTB names the token in InvalidToken: never let it out in the message or the chain
            with best_effort(log, "shutting down after a failed start"):
                await self._shutdown_app()
            if self._webhook is not None:
                with best_effort(log, "stopping the webhook after a failed start"):
                    await self._webhook.stop()
                self._webhook = None
            # a failed initialize() leaves PTB "not initialised", so its shutdown skips these
            for opened in (request, poll_request):
                if opened is not None:
                    with best_effort(log, "closing an HTTP session after a failed start"):
                        await opened.shutdown()
            raise _startup_failure(self.name, exc) from None
        self._running = True
        log.info("telegram bot %s (@%s) started, %s mode", self.name, self._username, opts.mode)

    async def _start_polling(self) -> None:
        if self._app is None or not self._receiving or self._poller is not None:
            return
        self._poller = Poller(
            self._app.bot,
            self._take,
            name=self.name,
            timeout=self._options.poll_timeout,
            allowed_updates=ALLOWED_UPDATES,
        )
        self._poller.start()

    async def _stop_polling(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            await poller.stop()

    async def _start_webhook(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        # imported here: aiohttp's server side costs a polling bot ~1.7 MiB for nothing
        from chatbridge.adapters.telegram.webhook import WebhookServer

        opts = self._options

        async def feed(data: dict[str, Any]) -> None:
            # returns (and the listener answers 200) once the message is journaled
            await self._recovered.wait()
            try:
                await self._take(Update.de_json(data, app.bot))
            except Exception as exc:  # a bug: answering 500 would only bring it back forever
                log.error(
                    "telegram bot %s: an update could not be handled: %s",
                    self.name,
                    safe_error(exc),
                    exc_info=exc,
                )

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
        """Stop taking updates but keep the bot able to send, so turns in flight can finish;
        then :meth:`stop`. Updates not fetched yet stay on
        Telegram's server for the next process: nothing is lost across a restart."""
        self._running = False
        self._receiving = False
        app = self._app
        if app is None:
            return
        self._albums.end_all()  # an album still gathering is a turn too
        await self._stop_polling()
        if self._webhook is not None:
            await self._webhook.stop()

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

    @property
    def _texts(self) -> Catalogue:
        return self._engine.texts.catalogue

    def _counters(self) -> dict[str, int]:
        return {"updates": self.updates_seen, "turns": self.turns_started}

    def _spawn(self, job: Awaitable[object]) -> None:
        async def run() -> None:
            try:
                await job
            except Exception as exc:
                log.error("telegram bot %s: background job failed: %s", self.name, safe_error(exc))

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- updates ----------------------------------------------------------------------------
    # Every update goes through ``_take``, which returns once the message is written down in
    # the journal (or known not to be a turn): the poller confirms a batch, and the webhook
    # answers 200, only after that. ``_take`` reaches ``engine.accept`` before its first
    # await, so each message takes its place in its conversation in arrival order.

    async def _take(self, update: Update) -> None:
        self.updates_seen += 1
        source = f"u{update.update_id}"
        if update.callback_query is not None:
            await self._on_callback(update.callback_query, source)
            return
        msg = update.message
        if msg is None or msg.from_user is None or msg.from_user.is_bot:
            return
        if msg.chat.type == ChatType.CHANNEL:
            return
        # a new message ends any album still gathering in this chat
        self._albums.end_in_chat(msg.chat.id, except_group=msg.media_group_id)
        if msg.media_group_id:
            await self._albums.part(
                msg, lambda first, gathered: self._accept(first, gathered, source)
            )
            return
        await self._accept(msg, [msg], source)

    async def _accept(
        self,
        first: Message,
        msgs: Sequence[Message] | Callable[[], Awaitable[list[Message]]],
        source: str,
    ) -> None:
        assert first.from_user is not None
        key = conversation_key(self.name, first, first.from_user.id)

        async def prepare() -> Prepared:
            messages = list(msgs) if isinstance(msgs, Sequence) else await msgs()
            try:
                return await self._prepare(messages, key)
            except Exception as exc:  # a bug or a platform fault: the user still hears back
                log.error(
                    "telegram bot %s: could not take a message: %s",
                    self.name,
                    safe_error(exc),
                    exc_info=exc,
                )
                assert self._ops is not None
                with best_effort(log, "telling the user their message failed"):
                    target = reply_target(messages[0], quote=True)
                    sender = messages[0].from_user
                    language = sender.language_code if sender is not None else None
                    text = self._texts.text("internal", language)
                    await self._ops.say(target, escape(text))
                return None

        future = await self._engine.accept(key, prepare, source=source)
        if future is not None:
            self._track(future)

    async def _prepare(self, msgs: Sequence[Message], key: ConversationKey) -> Prepared:
        """The turn these messages make, or None (a command, not for us, or refused)."""
        first = msgs[0]
        user = first.from_user
        assert user is not None
        lead = next((m for m in msgs if m.text or m.caption), first)
        text = lead.text or lead.caption or ""
        group = first.chat.type != ChatType.PRIVATE
        command = command_of(text, lead, self._username)
        if command is not None and not command[0]:
            return None
        mentioned = command is not None or addressed(
            lead,
            text,
            every_message=self._options.group_reply == "all",
            bot_id=self._bot_id,
            username=self._username,
        )
        facts = Facts(
            user=str(user.id),
            chat=str(first.chat.id),
            group=group,
            mentioned=mentioned,
            language=user.language_code,
        )
        verdict, refusal = self._access.check(facts)
        if verdict is not Verdict.ALLOW:
            if refusal is not None and self._ops is not None:
                await self._ops.say(reply_target(lead, quote=True), escape(refusal))
            return None
        if group and self._username:
            text = strip_mention(text, self._username)
        target = reply_target(lead, quote=True)
        language = user.language_code
        assert self._ops is not None and self._commands is not None
        if command is not None and self._commands.handles(command[0]):
            ctx = CommandContext(
                key=key,
                target=target,
                user_id=user.id,
                language=language,
                args=command[1],
                images=lambda: listing_images(self._bot(), msgs, self._options.max_photo_bytes),
            )
            # not awaited: a command may queue behind this conversation's turns (/lang)
            self._spawn(self._commands.run(command[0], ctx))
            return None
        try:
            images = await message_images(self._bot(), msgs, self._options.max_photo_bytes)
        except ImageRejected as exc:
            await self._ops.say(target, escape(self._texts.rejection(exc, language)))
            return None
        if not text.strip() and not images:
            await self._ops.say(target, escape(self._texts.text("unsupported_media", language)))
            return None
        inbound = Inbound(
            key=key,
            text=text.strip(),
            images=tuple(images),
            language=language,
            message_id=str(first.message_id),
        )
        return inbound, self._reply(target, language)

    def _reply(self, target: Target, language: str | None) -> TelegramReply:
        assert self._ops is not None
        return TelegramReply(
            self._ops,
            target,
            interval=self._options.stream_interval,
            use_drafts=self._options.use_drafts,
            choose_hint=self._texts.text("choose_option", language),
        )

    def _bot(self) -> Bot:
        assert self._app is not None
        return self._app.bot

    def surface_for(self, inbound: Inbound) -> Surface:
        """:class:`core.protocols.StoredReplies`: where to answer a journaled message after a
        restart."""
        return self._reply(stored_target(inbound), inbound.language)

    def _track(self, future: asyncio.Future[TurnResult]) -> None:
        self.turns_started += 1
        self._pending.add(future)

        def done(fut: asyncio.Future[TurnResult]) -> None:
            self._pending.discard(fut)
            error = None if fut.cancelled() else fut.exception()
            if error is not None:
                log.error("telegram bot %s: turn crashed: %s", self.name, safe_error(error))

        future.add_done_callback(done)

    # --- buttons ----------------------------------------------------------------------------

    async def _on_callback(self, query: CallbackQuery, source: str) -> None:
        msg = query.message
        if not isinstance(msg, Message):
            with contextlib.suppress(TelegramError):
                await query.answer(
                    self._texts.text("button_expired", query.from_user.language_code)
                )
            return
        key = conversation_key(self.name, msg, query.from_user.id)

        async def prepare() -> Prepared:
            data = query.data or ""
            private = msg.chat.type == ChatType.PRIVATE
            facts = Facts(
                user=str(query.from_user.id),
                chat=str(msg.chat.id),
                group=not private,
                mentioned=True,  # a press on the bot's own message
                language=query.from_user.language_code,
            )
            verdict, refusal = self._access.check(facts)
            if verdict is not Verdict.ALLOW:
                with contextlib.suppress(TelegramError):
                    await query.answer(refusal)
                return None
            short_id = short_id_of(data)
            payload = await self._engine.resolve_button(short_id) if short_id else None
            with contextlib.suppress(TelegramError):
                expired = self._texts.text("button_expired", query.from_user.language_code)
                await query.answer(expired if payload is None else None)
            if payload is None:
                return None
            label = pressed_label(msg.reply_markup, data) or payload
            target = reply_target(msg, quote=False)
            await self._show_choice(msg, target, label)
            inbound = Inbound(
                key=key,
                text=label,
                button_payload=payload,
                language=query.from_user.language_code,
                message_id=str(msg.message_id),
            )
            return inbound, self._reply(target, inbound.language)

        future = await self._engine.accept(key, prepare, source=source)
        if future is not None:
            self._track(future)

    async def _show_choice(self, msg: Message, target: Target, label: str) -> None:
        """Mark the pressed choice on the message and drop its keyboard (no double presses)."""
        assert self._ops is not None
        base = msg.text_html if msg.text else None
        text = f"{base}\n\n✅ <b>{escape(label)}</b>" if base else None
        ops = self._ops

        async def mark() -> None:
            if text is not None and visible_length(text) <= MAX_TEXT:
                await ops.edit(target, msg.message_id, text, None)
            else:
                await ops.edit_markup(target, msg.message_id, None)

        try:
            await deliver(mark, what="a pressed button's mark", deadline=CHOICE_MARK_DEADLINE)
        except Exception as exc:  # the choice still goes through; the mark is cosmetic
            log.info("could not mark a pressed button: %s", safe_error(exc))


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
