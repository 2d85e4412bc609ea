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
The methods themselves (what each checks and does) are :mod:`tests.fakes.telegram_methods`.
Tests push updates (text, photo, document, album, callback query) with the helpers of
:class:`FakeBot`; in webhook mode the pushes are POSTed to the registered URL with the
registered secret token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.flood_limits import TelegramLimits
from tests.fakes.telegram_methods import ApiError, BotMethods, Call
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


@dataclass
class Injected:
    method: str
    status: int
    description: str
    retry_after: int | None
    chat_id: Any
    times: int


class FakeTelegram(BotMethods):
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
