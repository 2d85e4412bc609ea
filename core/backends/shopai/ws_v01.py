"""ShopAI v0.1: JSON frames over a raw WebSocket at ``/shpaiws?chat_token=...`` (websockets).

Two tasks per connection: a reader, and a heartbeat sender on a fixed schedule (the server
times the connection out without a heartbeat every ``heartbeat_interval`` seconds). The
websockets library's own ping is off and compression is not offered: the application
heartbeat already proves liveness, and a deflate context per connection would cost far more
memory than the rest of an idle session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from chatbridge.core.backends.shopai.connection import (
    ConnectFailed,
    ShopAIConnection,
    TokenRejected,
    log_unknown,
)

__all__ = ["WebSocketConnection"]

log = logging.getLogger(__name__)

# Without any frame (heartbeat answers included) for this many intervals the socket is dead.
_SILENT_INTERVALS = 4


def websocket_url(base_url: str, token: str) -> str:
    scheme, rest = base_url.split("://", 1)
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest}/shpaiws?{urlencode({'chat_token': token})}"


class WebSocketConnection(ShopAIConnection):
    protocol = "websocket"

    _ws: ClientConnection | None = None
    _reader: asyncio.Task[None] | None = None
    _beater: asyncio.Task[None] | None = None
    _last_rx: float = 0.0

    async def _connect(self) -> None:
        url = websocket_url(self.settings.base_url, self.token)
        try:
            self._ws = await connect(
                url,
                open_timeout=self.settings.connect_timeout,
                ping_interval=None,
                close_timeout=2.0,
                compression=None,
                max_size=2**20,
                max_queue=32,
            )
        except InvalidStatus as exc:
            # Future servers may refuse a bad token during the handshake instead.
            if exc.response.status_code in (401, 403):
                raise TokenRejected(f"handshake refused ({exc.response.status_code})") from exc
            raise ConnectFailed(f"handshake failed ({exc.response.status_code})") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._reader = asyncio.create_task(self._read_loop())
        self._beater = asyncio.create_task(self._heartbeat_loop())

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(json.dumps(frame))

    async def send_message(self, text: str) -> None:
        self.mark_processing()  # before the send: the server's answer may beat our bookkeeping
        await self._send({"type": "message", "message": text})

    async def request_history(self) -> None:
        await self._send({"type": "get_history"})

    async def _read_loop(self) -> None:
        assert self._ws is not None
        ws = self._ws
        loop = asyncio.get_running_loop()
        reason = "closed by server"
        try:
            async for raw in ws:
                self._last_rx = loop.time()
                self._on_frame(raw)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must end the connection, not hang the turn
            log.exception("ShopAI v0.1 reader failed")
            reason = f"reader failed: {exc!r}"
        finally:
            if ws.close_code is not None:
                reason = f"closed by server ({ws.close_code} {ws.close_reason})".strip()
            if self._beater is not None:
                self._beater.cancel()
            self._on_closed(reason)

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            log_unknown("non-JSON frame")
            return
        if not isinstance(frame, dict):
            log_unknown("non-object frame")
            return
        kind = frame.get("type")
        if kind == "status":
            self._dispatch("status", frame.get("status"))
        elif kind == "token":
            token = frame.get("token")
            if isinstance(token, str):
                self._dispatch("token", token)
        elif kind == "history":
            history = frame.get("history")
            if isinstance(history, list):
                self._dispatch("history", history)
        elif kind == "error":
            self._dispatch("error", str(frame.get("message", "")))
        elif kind == "heartbeat":
            pass  # the answer to ours; its arrival already refreshed _last_rx
        else:
            self.metrics.unknown_frames += 1
            log_unknown(kind)

    async def _heartbeat_loop(self) -> None:
        """Send a heartbeat every interval on a fixed schedule, and notice a silent server."""
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat_interval
        due = loop.time() + interval
        try:
            while self.alive:
                await asyncio.sleep(max(0.0, due - loop.time()))
                now = loop.time()
                if now - self._last_rx > _SILENT_INTERVALS * interval:
                    log.warning(
                        "ShopAI v0.1 server silent for %.0f s; closing", now - self._last_rx
                    )
                    await self.aclose()
                    return
                await self._send({"type": "heartbeat"})
                self.metrics.heartbeat(now - due)
                due += interval
                if due <= now:  # the loop was blocked for a whole interval: don't burst
                    due = now + interval
        except (ConnectionClosed, ConnectionError):
            pass
        except asyncio.CancelledError:
            raise

    async def _close_transport(self) -> None:
        if self._beater is not None and self._beater is not asyncio.current_task():
            self._beater.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, timeout=2.0)
