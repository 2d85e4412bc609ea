"""ShopAI v0.2: Socket.IO events on python-socketio's AsyncClient.

The client connects with ``chat_token`` in the URL query (python-socketio/engine.io keep a
URL's query string and append their own ``EIO``/``transport`` parameters), over the WebSocket
transport only (no long-polling first: one upgrade less, and no sticky-session need), and
without python-socketio's own reconnection: the backend decides when to reconnect because a
reconnect mid-answer must be followed by ``get_history``. Every client shares one aiohttp
session (one connector, no per-conversation pool).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import socketio
import socketio.exceptions

from chatbridge.core.backends.shopai.connection import (
    ConnectFailed,
    ServerError,
    ShopAIConnection,
    ShopAIMetrics,
    Status,
    StreamedToken,
    TokenRejected,
    WireHistory,
    log_unknown,
)
from chatbridge.core.backends.shopai.settings import ShopAISettings

__all__ = ["SocketIOConnection"]

log = logging.getLogger(__name__)


def _handshake_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket handshake somewhere in ``exc``'s chain."""
    seen: BaseException | None = exc
    for _ in range(6):  # socketio error <- engineio error <- aiohttp handshake error
        if seen is None:
            return None
        if isinstance(seen, aiohttp.WSServerHandshakeError):
            return seen.status
        seen = seen.__cause__ or seen.__context__
    return None


class SocketIOConnection(ShopAIConnection):
    protocol = "socketio"

    def __init__(
        self,
        settings: ShopAISettings,
        token: str,
        metrics: ShopAIMetrics,
        http: aiohttp.ClientSession,
    ) -> None:
        super().__init__(settings, token, metrics)
        self._http = http
        self._sio: socketio.AsyncClient | None = None

    async def _connect(self) -> None:
        sio = socketio.AsyncClient(
            reconnection=False,
            http_session=self._http,
            handle_sigint=False,
            request_timeout=self.settings.connect_timeout,
            logger=False,
            engineio_logger=False,
        )
        sio.on("status", self._on_status)
        sio.on("token", self._on_token)
        sio.on("history", self._on_history)
        sio.on("error", self._on_error)
        sio.on("disconnect", self._on_disconnect)
        sio.on("*", self._on_other)
        self._sio = sio
        url = f"{self.settings.base_url}/?{urlencode({'chat_token': self.token})}"
        # engine.io drops the URL's path: an instance behind a path prefix needs it here
        prefix = urlsplit(self.settings.base_url).path.strip("/")
        try:
            await sio.connect(
                url,
                transports=["websocket"],
                socketio_path=f"{prefix}/socket.io" if prefix else "socket.io",
                wait_timeout=self.settings.connect_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            # A CONNECT_ERROR packet (the server's connect handler said no) lands the
            # namespace in failed_namespaces; a transport failure does not.
            if sio.failed_namespaces:
                raise TokenRejected("connection rejected by the server") from exc
            # "When chat_token is invalid, the server will reject the connection": a server
            # may do that with an HTTP 401/403 on the WebSocket handshake, as v0.1 may
            refused = _handshake_status(exc)
            if refused in (401, 403):
                raise TokenRejected(f"handshake refused ({refused})") from exc
            raise ConnectFailed(f"Socket.IO connect failed: {exc}") from exc
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc

    async def send_message(self, text: str) -> None:
        self.mark_processing()  # before the send: the server's answer may beat our bookkeeping
        await self._emit("send_message", text)

    async def request_history(self) -> None:
        # "Event data: Array": a handler that takes its data argument never runs without one.
        # The client keeps no history of its own (the server's overwrites it), so: empty.
        await self._emit("get_history", [])

    async def _emit(self, event: str, data: Any = None) -> None:
        if self._sio is None or not self.alive:
            raise ConnectionError("not connected")
        try:
            await self._sio.emit(event, data)
        except socketio.exceptions.SocketIOError as exc:
            raise ConnectionError(str(exc)) from exc

    async def _on_status(self, status: Any = None, *_: Any) -> None:
        if isinstance(status, str):
            self._dispatch(Status(status))

    async def _on_token(self, token: Any = None, *_: Any) -> None:
        if isinstance(token, str):
            self._dispatch(StreamedToken(token))

    async def _on_history(self, history: Any = None, *_: Any) -> None:
        if isinstance(history, list):
            self._dispatch(WireHistory(history))

    async def _on_error(self, message: Any = None, *_: Any) -> None:
        # "The connection always closes after an error": the disconnect event follows.
        self._dispatch(ServerError("" if message is None else str(message)))

    async def _on_disconnect(self, *reason: Any) -> None:
        self._on_closed(f"disconnected ({reason[0] if reason else 'unknown'})")

    async def _on_other(self, event: str, *_: Any) -> None:
        self.metrics.unknown_frames += 1
        log_unknown(event)

    async def _close_transport(self) -> None:
        if self._sio is not None:
            await self._sio.disconnect()
