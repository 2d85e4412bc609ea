"""A fake Telegram Bot API server (aiohttp, 127.0.0.1, ephemeral port).

python-telegram-bot talks to it unmodified::

    fake = FakeTelegram(); await fake.start()
    bot = fake.add_bot("123:SECRET", "shop_bot")
    app = ApplicationBuilder().token(bot.token).base_url(f"{fake.url}/bot")
          .base_file_url(f"{fake.url}/file/bot").build()

It records every call (:class:`Call`), keeps each bot's messages, and enforces the real limits
that bite a streaming bot: 4096 characters after entity parsing, 1-64 byte callback_data, 8
buttons a row, "message is not modified", "can't parse entities", and Telegram's flood limits,
each answered with a 429 carrying ``parameters.retry_after`` as Telegram does:

- bot-wide: at most ``bot_limit`` (30) messages in any second across all chats of one token
  (sendMessage, editMessageText, sendPhoto, a media group's every item, ...; drafts and chat
  actions are not counted);
- per group: at most ``group_limit`` (20) messages in any minute;
- per chat: a token bucket of one message per ``interval`` with bursts of ``chat_burst``
  (about one a second with short bursts; ``chat_burst=1`` is a strict one per ``interval``).
Tests push updates (text, photo, document, album, callback query) with the helpers of
:class:`FakeBot`; in webhook mode the pushes are POSTed to the registered URL with the
registered secret token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.flood_limits import TelegramLimits
from tests.fakes.telegram_html import EntityParseError, parse_html, strip_message, utf16_len
from tests.fakes.telegram_updates import FakeBot

__all__ = ["ApiError", "Call", "FakeBot", "FakeTelegram"]

# Fields PTB sends as raw strings; everything else is JSON-encoded by PTB.
STRING_FIELDS = {
    "text",
    "caption",
    "parse_mode",
    "callback_query_id",
    "url",
    "secret_token",
    "file_id",
    "action",
    "query",
    "emoji",
    "language_code",
    "description",
}
# Methods that put or change a message in a chat and count towards the per-chat flood limit.
PACED_METHODS = {
    "sendMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "editMessageCaption",
    "sendPhoto",
    "sendDocument",
    "sendMediaGroup",
}
MAX_TEXT = 4096
MAX_FILE_DOWNLOAD = 20 * 1024 * 1024


def _check_migrated(bot: FakeBot, chat_id: Any) -> None:
    """A group upgraded to a supergroup answers every call with the supergroup's new id."""
    new_id = bot.migrated.get(chat_id) if isinstance(chat_id, int) else None
    if new_id is not None:
        raise ApiError(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            {"migrate_to_chat_id": new_id},
        )


class ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class Call:
    """One request the server received."""

    method: str
    params: dict[str, Any]
    time: float  # loop.time() at arrival
    token: str
    status: int = 200
    result: Any = None
    error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")


@dataclass
class Injected:
    method: str
    status: int
    description: str
    retry_after: int | None
    chat_id: Any
    times: int


class FakeTelegram:
    """The server. ``interval``: seconds per message in one chat (0 = no per-chat limit);
    ``draft_interval`` likewise for sendMessageDraft (its own bucket, no bursts).
    ``bot_limit`` per ``bot_period`` / ``group_limit`` per ``group_period``: Telegram's are 30
    a second and 20 a minute; tests stretch the periods to provoke a limit without timing; 0
    turns a limit off."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        chat_burst: int = 3,
        bot_limit: int = 30,
        bot_period: float = 1.0,
        group_limit: int = 20,
        group_period: float = 60.0,
        draft_interval: float = 0.0,
    ) -> None:
        self.limits = TelegramLimits(
            interval, chat_burst, bot_limit, bot_period, group_limit, group_period, draft_interval
        )
        self.limited = self.limits.limited  # 429s answered, by limit
        self.bots: dict[str, FakeBot] = {}
        self.calls: list[Call] = []
        self.files: dict[str, tuple[bytes, int, str]] = {}  # file_id -> (data, size, path)
        self.ids = itertools.count(1)
        self.injected: list[Injected] = []
        self.count_429 = 0
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.url = ""

    @property
    def interval(self) -> float:
        """Seconds per message in one chat (0 = no per-chat limit); may be changed live."""
        return self.limits.interval

    @interval.setter
    def interval(self, value: float) -> None:
        self.limits.interval = value

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, port: int = 0) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def stop(self) -> None:
        self._closing.set()
        for bot in self.bots.values():
            bot.new_update.set()
            await bot.stop_redelivery()
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession()
        return self._client

    def add_bot(self, token: str, username: str = "test_bot") -> FakeBot:
        bot = FakeBot(self, token, username)
        self.bots[token] = bot
        return bot

    def add_file(
        self, data: bytes, *, size: int | None = None, suffix: str = "jpg"
    ) -> dict[str, Any]:
        n = next(self.ids)
        file_id = f"file{n}"
        self.files[file_id] = (data, len(data) if size is None else size, f"files/{n}.{suffix}")
        return {"file_id": file_id, "file_unique_id": f"u{n}", "file_size": self.files[file_id][1]}

    # --- test controls ----------------------------------------------------------------------

    def inject_error(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = 1,
        description: str | None = None,
        chat_id: Any = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (in ``chat_id``, if given) fail."""
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after}"
                if status == 429
                else "Internal Server Error"
            )
        self.injected.append(Injected(method, status, description, retry_after, chat_id, times))

    def calls_of(self, method: str, chat_id: Any = None, *, ok: bool | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method
            and (chat_id is None or c.chat_id == chat_id)
            and (ok is None or c.ok == ok)
        ]

    async def wait_for(
        self, predicate: Callable[[Call], bool], *, timeout: float = 5.0, since: int = 0
    ) -> Call:
        """The first recorded call (from index ``since``) matching ``predicate``."""

        async def scan() -> Call:
            seen = since
            async with self._changed:
                while True:
                    for call in self.calls[seen:]:
                        if predicate(call):
                            return call
                    seen = len(self.calls)
                    await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def wait_calls(
        self,
        method: str,
        count: int = 1,
        *,
        chat_id: Any = None,
        timeout: float = 5.0,
        ok: bool | None = True,
    ) -> list[Call]:
        async with asyncio.timeout(timeout):
            async with self._changed:
                while len(self.calls_of(method, chat_id, ok=ok)) < count:
                    await self._changed.wait()
        return self.calls_of(method, chat_id, ok=ok)

    # --- HTTP --------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            return dict(await request.json()), files
        if request.method == "GET":
            raw: Any = request.query
        else:
            raw = await request.post()
        for key, value in raw.items():
            if isinstance(value, web.FileField):
                files[key] = value.file.read()
            elif key in STRING_FIELDS:
                params[key] = value
            else:
                try:
                    params[key] = json.loads(value)
                except ValueError:
                    params[key] = value
        return params, files

    async def _handle_api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params, files = await self._params(request)
        call = Call(method, params, asyncio.get_running_loop().time(), token, files=files)
        self.calls.append(call)
        try:
            bot = self.bots.get(token)
            if bot is None:
                raise ApiError(401, "Unauthorized")
            self._check_injected(call)
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            call.result = await handler(bot, params, call)
            body: dict[str, Any] = {"ok": True, "result": call.result}
        except ApiError as exc:
            call.status, call.error = exc.status, exc.description
            if exc.status == 429:
                self.count_429 += 1
            body = {"ok": False, "error_code": exc.status, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(body, status=call.status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self.bots:
            return web.Response(status=401)
        path = request.match_info["path"]
        for data, _, file_path in self.files.values():
            if file_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    def _check_injected(self, call: Call) -> None:
        for inj in self.injected:
            if (
                inj.method == call.method
                and inj.times > 0
                and (inj.chat_id is None or inj.chat_id == call.chat_id)
            ):
                inj.times -= 1
                params = {"retry_after": inj.retry_after} if inj.retry_after else None
                raise ApiError(inj.status, inj.description, params)

    def _pace(
        self, bot: FakeBot, chat: dict[str, Any], now: float, bucket: str, count: int = 1
    ) -> None:
        """Count a call into ``chat`` against Telegram's limits, or answer 429 as it does."""
        retry = self.limits.check(bot.token, chat, now, bucket, count)
        if retry is not None:
            raise ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})

    # --- validation ---------------------------------------------------------------------------

    @staticmethod
    def _render(params: dict[str, Any], key: str = "text") -> tuple[str, list[dict[str, Any]]]:
        raw = params.get(key)
        if raw is None or raw == "":
            raise ApiError(400, f"Bad Request: message {key} is empty")
        raw = str(raw)
        if params.get("parse_mode") == "HTML":
            try:
                text, entities = parse_html(raw)
            except EntityParseError as exc:
                raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        else:
            text, entities = raw, list(params.get("entities") or [])
        text, entities = strip_message(text, entities)
        if not text:
            raise ApiError(400, f"Bad Request: message {key} is empty")
        limit = MAX_TEXT if key == "text" else 1024
        if utf16_len(text) > limit:
            what = "message is too long" if key == "text" else "message caption is too long"
            raise ApiError(400, f"Bad Request: {what}")
        return text, entities

    @staticmethod
    def _check_markup(markup: Any) -> dict[str, Any] | None:
        if not markup:
            return None
        if isinstance(markup, str):
            markup = json.loads(markup)
        rows = markup.get("inline_keyboard")
        if rows is None:
            return dict(markup)
        if sum(len(r) for r in rows) > 100:
            raise ApiError(400, "Bad Request: reply markup is too long")
        for row in rows:
            if len(row) > 8:
                raise ApiError(400, "Bad Request: BUTTONS_TOO_MUCH")
            for button in row:
                if not str(button.get("text", "")).strip():
                    raise ApiError(400, "Bad Request: BUTTON_TEXT_EMPTY")
                if "callback_data" in button:
                    size = len(str(button["callback_data"]).encode("utf-8"))
                    if not 1 <= size <= 64:
                        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                elif "url" in button:
                    if not str(button["url"]).startswith(("http://", "https://", "tg://")):
                        raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
                else:
                    raise ApiError(400, "Bad Request: BUTTON_TYPE_INVALID")
        return dict(markup)

    @staticmethod
    def _chat(bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        _check_migrated(bot, chat_id)
        chat = bot.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    # --- methods --------------------------------------------------------------------------------

    async def _m_getMe(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        return {
            **bot.user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_getUpdates(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        if bot.webhook_url is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if offset:
            bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
        deadline = asyncio.get_running_loop().time() + timeout
        while not bot.updates and not self._closing.is_set():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            bot.new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bot.new_update.wait(), remaining)
        return bot.updates[:limit]

    async def _m_deleteWebhook(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        bot.webhook_url = bot.webhook_secret = None
        if params.get("drop_pending_updates"):
            bot.updates.clear()
        return True

    async def _m_setWebhook(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        url = params.get("url") or ""
        if not url:
            return await self._m_deleteWebhook(bot, params, call)
        if not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: invalid URL")
        bot.webhook_url, bot.webhook_secret = url, params.get("secret_token")
        return True

    async def _m_getWebhookInfo(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        return {
            "url": bot.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(bot.updates),
        }

    async def _m_setMyCommands(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        commands = params.get("commands") or []
        for c in commands:
            name, desc = str(c.get("command", "")), str(c.get("description", ""))
            if not (
                1 <= len(name) <= 32
                and name.replace("_", "").isalnum()
                and name.islower()
                and 1 <= len(desc) <= 256
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        # "A two-letter ISO 639-1 language code"; empty: every user without a dedicated menu
        language = str(params.get("language_code") or "")
        if language and not (len(language) == 2 and language.isalpha() and language.islower()):
            raise ApiError(400, "Bad Request: invalid language code specified")
        bot.menus[language] = list(commands)
        if not language:
            bot.commands = list(commands)
        return True

    async def _m_getMyCommands(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        return bot.menus.get(str(params.get("language_code") or ""), [])

    async def _m_sendChatAction(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        self._chat(bot, params)
        return True

    async def _m_sendMessage(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        text, entities = self._render(params)
        markup = self._check_markup(params.get("reply_markup"))
        self._pace(bot, chat, call.time, "msg")
        return self._store(bot, chat, params, {"text": text}, entities, markup)

    async def _m_sendPhoto(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        extra: dict[str, Any] = {
            "photo": [{"file_id": "sent", "file_unique_id": "sent", "width": 1, "height": 1}]
        }
        entities: list[dict[str, Any]] = []
        if params.get("caption"):
            extra["caption"], entities = self._render(params, "caption")
        markup = self._check_markup(params.get("reply_markup"))
        self._pace(bot, chat, call.time, "msg")
        return self._store(bot, chat, params, extra, entities, markup)

    async def _m_sendMediaGroup(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        media = params.get("media") or []
        if not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of media in the album")
        self._pace(bot, chat, call.time, "msg", count=len(media))  # each item is a message
        group = str(next(self.ids))
        photo = [{"file_id": "sent", "file_unique_id": "sent", "width": 1, "height": 1}]
        return [
            self._store(bot, chat, params, {"photo": photo, "media_group_id": group}, [], None)
            for _ in media
        ]

    def _store(
        self,
        bot: FakeBot,
        chat: dict[str, Any],
        params: dict[str, Any],
        extra: dict[str, Any],
        entities: list[dict[str, Any]],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "message_id": next(bot.message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": bot.user,
            **extra,
        }
        if entities:
            msg["caption_entities" if "caption" in extra else "entities"] = entities
        if markup:
            msg["reply_markup"] = markup
        if params.get("message_thread_id"):
            msg["message_thread_id"] = params["message_thread_id"]
            msg["is_topic_message"] = True
        bot.messages[(chat["id"], msg["message_id"])] = msg
        return msg

    def _own_message(self, bot: FakeBot, params: dict[str, Any]) -> dict[str, Any]:
        _check_migrated(bot, params.get("chat_id"))
        key = (params.get("chat_id"), params.get("message_id"))
        msg = bot.messages.get(key)  # type: ignore[arg-type]
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return msg

    async def _m_editMessageText(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        msg = self._own_message(bot, params)
        text, entities = self._render(params)
        markup = self._check_markup(params.get("reply_markup"))
        if (
            text == msg.get("text")
            and entities == msg.get("entities", [])
            and markup == msg.get("reply_markup")
        ):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message "
                "content and reply markup are exactly the same as a current "
                "content and reply markup of the message",
            )
        self._pace(bot, msg["chat"], call.time, "msg")
        msg.update(text=text, edit_date=int(time.time()))
        msg.pop("entities", None)
        msg.pop("reply_markup", None)
        if entities:
            msg["entities"] = entities
        if markup:
            msg["reply_markup"] = markup
        return msg

    async def _m_editMessageReplyMarkup(
        self, bot: FakeBot, params: dict[str, Any], call: Call
    ) -> Any:
        msg = self._own_message(bot, params)
        markup = self._check_markup(params.get("reply_markup"))
        if markup == msg.get("reply_markup"):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message "
                "content and reply markup are exactly the same as a current "
                "content and reply markup of the message",
            )
        self._pace(bot, msg["chat"], call.time, "msg")
        msg.pop("reply_markup", None)
        if markup:
            msg["reply_markup"] = markup
        return msg

    async def _m_sendMessageDraft(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        chat = self._chat(bot, params)
        if chat["type"] != "private":
            raise ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        if not params.get("draft_id"):
            raise ApiError(400, "Bad Request: draft_id must be non-zero")
        if params.get("text"):
            self._render(params)
        self._pace(bot, chat, call.time, "draft")
        return True

    async def _m_answerCallbackQuery(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        if len(str(params.get("text") or "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    async def _m_getFile(self, bot: FakeBot, params: dict[str, Any], call: Call) -> Any:
        entry = self.files.get(str(params.get("file_id")))
        if entry is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        _, size, path = entry
        if size > MAX_FILE_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": params["file_id"],
            "file_unique_id": "u" + str(params["file_id"]),
            "file_size": size,
            "file_path": path,
        }
