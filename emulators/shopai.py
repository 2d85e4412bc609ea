"""A local ShopAI backend that follows the v0.1 (raw WebSocket) and v0.2 (Socket.IO) documents.

One instance serves one protocol version, like a real ShopAI instance:

- ``GET /init_session?license_key&lang`` -> ``{"status": "ok", "chat_token": ...}`` or a
  ``status: error`` JSON (invalid language lists the supported ones; invalid license key);
- ``GET /version`` -> ``{"status": "ok", "version": "v0.2"}`` (v0.2 only; 404 on v0.1; the
  path is :attr:`ShopAIStrict.version_path`);
- v0.1: ``GET /shpaiws?chat_token=`` raw JSON WebSocket frames with a ``type``;
- v0.2: Socket.IO at the default ``/socket.io`` path, ``chat_token`` in the query.

It enforces the message length limit, the heartbeat timeout (v0.1), the processing state (a
message that arrives while an answer is being generated is dropped, as the real server "may not
process" it) and token validity (v0.1 accepts then closes at once; v0.2 rejects the connect).
By default it is strict: it takes every liberty the documents leave a server (see
:mod:`chatbridge.emulators.shopai_strict`); ``strict=False`` / ``--lenient`` is the demo's.
Faults are switched on :attr:`ShopAIEmulator.faults` or with ``POST /_emulator/faults``;
``GET /_emulator/stats`` returns counters (and the heartbeat gaps the benchmark reads).

Run alone: ``python -m chatbridge.emulators.shopai --version v0.1 --port 8002``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

import socketio
from aiohttp import WSMsgType, web

from chatbridge.emulators.shopai_catalog import compose_entries, split_tokens
from chatbridge.emulators.shopai_faults import FAULT_SWITCHES, EmulatorStats, ShopAIFaults
from chatbridge.emulators.shopai_strict import ShopAIStrict, normalise

__all__ = [
    "EmulatorStats",
    "ShopAIEmulator",
    "ShopAIFaults",
    "ShopAIStrict",
    "start_shopai_emulator",
]

log = logging.getLogger(__name__)

Version = Literal["v0.1", "v0.2"]
_MAX_GAPS = 500_000  # bounded memory for the benchmark's heartbeat gap samples


class _Conn(Protocol):
    dropped: bool  # closed by the server (a fault), not by the client

    async def send(self, kind: str, payload: Any) -> None: ...
    async def error(self, message: str) -> None: ...
    async def drop(self) -> None: ...


@dataclass(eq=False)
class _Chat:
    token: str
    language: str
    issued_at: float
    history: list[dict[str, str]] = field(default_factory=list)
    status: str = "operational"
    conns: set[_Conn] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    async def broadcast(self, kind: str, payload: Any) -> None:
        for conn in list(self.conns):
            with contextlib.suppress(Exception):  # a closing socket must not stop the answer
                await conn.send(kind, payload)


class _WsConn:
    """A v0.1 raw WebSocket client."""

    def __init__(self, ws: web.WebSocketResponse, close_after_error: bool = False) -> None:
        self.ws = ws
        self.dropped = False
        self.close_after_error = close_after_error

    async def send(self, kind: str, payload: Any) -> None:
        frame: dict[str, Any] = {"type": kind}
        if kind == "status":
            frame["status"] = payload
        elif kind == "token":
            frame["token"] = payload
        elif kind == "history":
            frame["history"] = payload
        elif kind == "error":
            frame["message"] = payload
        elif payload is not None:
            frame["data"] = payload
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(frame))

    async def error(self, message: str) -> None:
        # v0.1 keeps the connection open after an error; "In future versions, the server will
        # simply close the connection when the client is causing an error" (a strict variant)
        await self.send("error", message)
        if self.close_after_error:
            await self.ws.close(code=1008, message=b"error")

    async def drop(self) -> None:
        await self.ws.close(code=1011, message=b"dropped by fault injection")


class _SioConn:
    """A v0.2 Socket.IO client."""

    def __init__(self, sio: socketio.AsyncServer, sid: str) -> None:
        self.sio = sio
        self.sid = sid
        self.dropped = False

    async def send(self, kind: str, payload: Any) -> None:
        await self.sio.emit(kind, payload, to=self.sid)

    async def error(self, message: str) -> None:
        # "The connection always closes after an error"
        await self.send("error", message)
        await self.sio.disconnect(self.sid)

    async def drop(self) -> None:
        await self.sio.disconnect(self.sid)


class ShopAIEmulator:
    """A running emulator; build it with :func:`start_shopai_emulator`."""

    def __init__(
        self,
        *,
        version: Version,
        license_key: str,
        languages: tuple[str, ...],
        token_delay: float,
        heartbeat_interval: float,
        heartbeat_timeout: float | None,
        max_message_length: int,
        strict: ShopAIStrict,
        think_delay: float = 0.0,
    ) -> None:
        self.version: Version = version
        self.license_key = license_key
        self.languages = tuple(languages)
        self.token_delay = token_delay
        self.think_delay = think_delay  # silence before the first token of each answer
        self.strict = strict
        if heartbeat_timeout is None:
            heartbeat_timeout = heartbeat_interval * (1 + strict.heartbeat_grace)
        self.heartbeat_timeout = heartbeat_timeout
        self.max_message_length = max_message_length
        self.faults = ShopAIFaults()
        self.stats = EmulatorStats()
        self.chats: dict[str, _Chat] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._ws: set[web.WebSocketResponse] = set()
        self._sid_chat: dict[str, _Chat] = {}
        self._sio: socketio.AsyncServer | None = None
        self._app = web.Application(middlewares=[self._refuse_handshake])
        self._app.router.add_get("/init_session", self._init_session)
        self._app.router.add_post("/_emulator/faults", self._set_faults)
        self._app.router.add_get("/_emulator/stats", self._get_stats)
        if version == "v0.2":
            if strict.version_path is not None:
                self._app.router.add_get(strict.version_path, self._version)
            self._sio = socketio.AsyncServer(
                async_mode="aiohttp", logger=False, engineio_logger=False
            )
            self._sio.on("connect", self._sio_connect)
            self._sio.on("disconnect", self._sio_disconnect)
            self._sio.on("send_message", self._sio_send_message)
            self._sio.on("get_history", self._sio_get_history)
            self._sio.attach(self._app)
        else:
            self._app.router.add_get("/shpaiws", self._ws_handler)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"

    async def stop(self) -> None:
        for chat in self.chats.values():
            if chat.task is not None:
                chat.task.cancel()
        for ws in list(self._ws):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")
        if self._sio is not None:
            for sid in list(self._sid_chat):
                with contextlib.suppress(Exception):
                    await self._sio.disconnect(sid)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def issue_token(self, language: str = "en") -> str:
        """A fresh chat token, as ``/init_session`` would hand out."""
        token = str(uuid.uuid4())
        self.chats[token] = _Chat(token=token, language=language, issued_at=time.monotonic())
        self.stats.sessions_created += 1
        return token

    def _valid_chat(self, token: str) -> _Chat | None:
        chat = self.chats.get(token)
        if chat is None:
            return None
        if self.faults.refuse_token and chat.issued_at <= self.faults.refuse_since:
            return None
        return chat

    # --- HTTP ------------------------------------------------------------------------------

    async def _init_session(self, request: web.Request) -> web.Response:
        if request.query.get("license_key") != self.license_key:
            self.stats.init_errors += 1
            return web.json_response({"status": "error", "message": "Invalid license key"})
        lang = request.query.get("lang", "")
        if lang not in self.languages:
            self.stats.init_errors += 1
            message = f"Invalide language, supported languages: {list(self.languages)}"
            return web.json_response({"status": "error", "message": message})
        return web.json_response({"status": "ok", "chat_token": self.issue_token(lang)})

    @web.middleware
    async def _refuse_handshake(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """v0.2 variant: a bad ``chat_token`` is refused with an HTTP status on the handshake."""
        status = self.strict.refuse_with_http
        if (
            status is not None
            and self.version == "v0.2"
            and request.path.startswith("/socket.io")
            and self._valid_chat(request.query.get("chat_token", "")) is None
        ):
            self.stats.connections_refused += 1
            return web.Response(status=status, text="invalid chat token")
        response: web.StreamResponse = await handler(request)
        return response

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": self.version})

    async def _set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        for name, value in body.items():
            if name in FAULT_SWITCHES:
                setattr(self.faults, name, bool(value))
            elif name == "slow_token_delay":
                self.faults.slow_token_delay = float(value)
            else:
                return web.json_response(
                    {"status": "error", "message": f"no fault {name}"}, status=400
                )
        return web.json_response({"status": "ok", "faults": asdict(self.faults)})

    async def _get_stats(self, request: web.Request) -> web.Response:
        with_gaps = request.query.get("gaps") == "1"
        return web.json_response(self.stats.as_json(with_gaps))

    # --- the conversation, shared by both versions ------------------------------------------

    async def _on_message(self, chat: _Chat, conn: _Conn, text: Any) -> None:
        self.stats.messages += 1
        if not isinstance(text, str):
            self.stats.errors_sent += 1
            await conn.error("Invalid message")
            return
        if len(text) > self.max_message_length:
            self.stats.too_long += 1
            self.stats.errors_sent += 1
            limit = self.max_message_length
            await conn.error(f"Message is too long, maximum length is {limit} characters")
            return
        if chat.status == "processing":
            # "The server may not process incoming messages ... in processing status"
            self.stats.dropped_while_processing += 1
            return
        if self.faults.error_frame:
            self.stats.errors_sent += 1
            await conn.error("Internal error while processing the message")
            return
        chat.status = "processing"
        stored = normalise(text) if self.strict.normalise_text else text
        chat.history.append({"type": "user", "content": stored})
        await chat.broadcast("status", "processing")
        chat.task = asyncio.create_task(self._generate(chat, text))

    async def _generate(self, chat: _Chat, question: str) -> None:
        entries = compose_entries(question, chat.language)
        answer = " ".join(entries)
        if not self.strict.several_entries:
            entries = [answer]
        tokens = split_tokens(answer)
        if self.faults.stale_tokens:
            tokens = split_tokens("A first draft that the final history replaces.")
        if self.faults.noise:
            await chat.broadcast("promo", {"banner": "Black Friday"})
        drop_at = len(tokens) // 2 if self.faults.drop_mid_stream else -1
        if self.think_delay > 0:
            await asyncio.sleep(self.think_delay)
        for i, token in enumerate(tokens):
            if i == drop_at:
                self.stats.drops += 1
                await self._drop_all(chat)
                if self.faults.lose_answer:
                    # the generation dies with the connection: the user message stays in
                    # the history without an answer, and the server is idle again
                    chat.status = "operational"
                    self.faults.lose_answer = False  # one-shot
                    return
            delay = self.token_delay
            if self.faults.slow_tokens:
                delay += self.faults.slow_token_delay
            if delay > 0:
                await asyncio.sleep(delay)
            self.stats.tokens_sent += len(chat.conns)
            await chat.broadcast("token", token)
        # the answer is kept even when nobody is connected: get_history recovers it
        chat.history.extend({"type": "ai", "content": entry} for entry in entries)
        chat.status = "operational"
        self.stats.answers += 1
        if self.faults.drop_before_history:
            # the answer is stored but the connection goes before the history: only a
            # get_history (with its data, on v0.2) recovers it
            self.faults.drop_before_history = False  # one-shot
            self.stats.drops += 1
            await self._drop_all(chat)
            return
        await chat.broadcast("history", list(chat.history))
        await chat.broadcast("status", "operational")

    async def _drop_all(self, chat: _Chat) -> None:
        """The server closes every connection of ``chat`` (a fault); generation goes on."""
        for conn in list(chat.conns):
            conn.dropped = True
            with contextlib.suppress(Exception):
                await conn.drop()

    def _client_left(self, chat: _Chat, conn: _Conn) -> None:
        """Strict: generation is tied to the client's socket and stops when the last one goes."""
        if chat.conns or conn.dropped or not self.strict.stop_on_disconnect:
            return
        if chat.task is not None and not chat.task.done():
            chat.task.cancel()
            chat.task = None
            chat.status = "operational"  # the user entry stays, unanswered
            self.stats.generations_stopped += 1

    # --- v0.1 raw WebSocket ------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        chat = self._valid_chat(request.query.get("chat_token", ""))
        if chat is None:
            # "A websocket connection will be established, but the server will close it
            # immediately."
            self.stats.connections_refused += 1
            await ws.close(code=1008, message=b"invalid chat token")
            return ws
        conn = _WsConn(ws, self.strict.close_after_error)
        loop = asyncio.get_running_loop()
        self._ws.add(ws)
        chat.conns.add(conn)
        self.stats.connections_opened += 1
        self.stats.open_connections += 1
        last_heartbeat = loop.time()
        seen_heartbeat = False
        try:
            await conn.send("status", chat.status)
            while not ws.closed:
                remaining = last_heartbeat + self.heartbeat_timeout - loop.time()
                if remaining <= 0:
                    self.stats.heartbeat_timeouts += 1
                    await ws.close(code=4000, message=b"heartbeat timeout")
                    break
                try:
                    msg = await ws.receive(timeout=remaining)
                except TimeoutError:
                    continue
                if msg.type != WSMsgType.TEXT:
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                        break
                    if msg.type == WSMsgType.ERROR:
                        break
                    continue
                try:
                    frame = json.loads(msg.data)
                    kind = frame.get("type")
                except (ValueError, AttributeError):
                    self.stats.unknown_frames += 1
                    continue
                if kind == "heartbeat":
                    now = loop.time()
                    if seen_heartbeat and len(self.stats.heartbeat_gaps) < _MAX_GAPS:
                        self.stats.heartbeat_gaps.append(now - last_heartbeat)
                    seen_heartbeat = True
                    last_heartbeat = now
                    self.stats.heartbeats += 1
                    if chat.status == "processing" and self.strict.silent_while_processing:
                        self.stats.heartbeats_unanswered += 1
                    else:
                        await conn.send("heartbeat", None)
                elif kind == "message":
                    await self._on_message(chat, conn, frame.get("message"))
                elif kind == "get_history":
                    self.stats.history_requests += 1
                    await conn.send("history", list(chat.history))
                else:
                    self.stats.unknown_frames += 1
        finally:
            chat.conns.discard(conn)
            self._ws.discard(ws)
            self.stats.open_connections -= 1
            self._client_left(chat, conn)
        return ws

    # --- v0.2 Socket.IO ---------------------------------------------------------------------

    async def _sio_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        token = (query.get("chat_token") or [""])[0]
        chat = self._valid_chat(token)
        if chat is None:
            self.stats.connections_refused += 1
            return False
        assert self._sio is not None
        self._sid_chat[sid] = chat
        chat.conns.add(_SioConn(self._sio, sid))
        self.stats.connections_opened += 1
        self.stats.open_connections += 1
        # after the CONNECT packet went out: "the server will emit a status event"
        self._sio.start_background_task(self._sio_greet, sid, chat)
        return True

    async def _sio_greet(self, sid: str, chat: _Chat) -> None:
        await asyncio.sleep(0)
        if self._sio is not None and sid in self._sid_chat:
            await self._sio.emit("status", chat.status, to=sid)

    async def _sio_disconnect(self, sid: str, *reason: Any) -> None:
        chat = self._sid_chat.pop(sid, None)
        if chat is None:
            return
        self.stats.open_connections -= 1
        for conn in list(chat.conns):
            if isinstance(conn, _SioConn) and conn.sid == sid:
                chat.conns.discard(conn)
                self._client_left(chat, conn)

    def _sio_conn(self, sid: str) -> tuple[_Chat, _Conn] | None:
        chat = self._sid_chat.get(sid)
        if chat is None:
            return None
        for conn in chat.conns:
            if isinstance(conn, _SioConn) and conn.sid == sid:
                return chat, conn
        return None

    async def _sio_send_message(self, sid: str, data: Any = None) -> None:
        found = self._sio_conn(sid)
        if found is not None:
            await self._on_message(found[0], found[1], data)

    async def _sio_get_history(self, sid: str, *args: Any) -> None:
        found = self._sio_conn(sid)
        if self.strict.history_needs_data and not (args and isinstance(args[0], list)):
            # a handler declared with its data argument is never called without one
            self.stats.history_requests_ignored += 1
            return
        if found is not None:
            self.stats.history_requests += 1
            await found[1].send("history", list(found[0].history))


async def start_shopai_emulator(
    *,
    version: Version = "v0.2",
    host: str = "127.0.0.1",
    port: int = 0,
    license_key: str = "test-license",
    languages: tuple[str, ...] = ("en", "hu", "pt"),
    token_delay: float = 0.005,
    heartbeat_interval: float = 15.0,
    heartbeat_timeout: float | None = None,
    max_message_length: int = 512,
    strict: bool | ShopAIStrict = True,
    think_delay: float = 0.0,
) -> ShopAIEmulator:
    """Start an emulator on ``host:port`` (0 = an ephemeral port; read ``.url``).

    ``heartbeat_timeout`` defaults to ``heartbeat_interval`` plus the strict grace;
    ``strict`` is True (every liberty), False (the lenient demo server) or a custom profile.
    """
    if isinstance(strict, bool):
        strict = ShopAIStrict() if strict else ShopAIStrict.lenient()
    if version not in ("v0.1", "v0.2"):
        raise ValueError(f"unknown ShopAI version {version!r}")
    emulator = ShopAIEmulator(
        version=version,
        license_key=license_key,
        languages=languages,
        token_delay=token_delay,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        max_message_length=max_message_length,
        strict=strict,
        think_delay=think_delay,
    )
    await emulator.start(host, port)
    return emulator


async def _serve(args: argparse.Namespace) -> None:
    emulator = await start_shopai_emulator(
        version=args.version,
        host=args.host,
        port=args.port,
        license_key=args.license_key,
        languages=tuple(x.strip() for x in args.languages.split(",") if x.strip()),
        token_delay=args.token_delay,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        max_message_length=args.max_message_length,
        strict=not args.lenient,
    )
    # one parseable line so a parent process can read the port back
    print(f"shopai emulator {args.version} listening on {emulator.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chatbridge.emulators.shopai", description=__doc__
    )
    parser.add_argument("--version", choices=["v0.1", "v0.2"], default="v0.2")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--license-key", default="test-license")
    parser.add_argument("--languages", default="en,hu,pt")
    parser.add_argument("--token-delay", type=float, default=0.02)
    parser.add_argument("--heartbeat-interval", type=float, default=15.0)
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=None, help="default: shortly after the interval"
    )
    parser.add_argument(
        "--lenient", action="store_true", help="the kindest server the documents allow (demo)"
    )
    parser.add_argument("--max-message-length", type=int, default=512)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
