"""ShopAI v0.1: JSON frames over a raw WebSocket at ``/shpaiws?chat_token=...`` (websockets).

Two tasks per connection: a reader, and a heartbeat sender on a fixed schedule. The document
asks for a heartbeat "every 15 seconds" and a server may time a connection out shortly after
a missed one, so heartbeats go out at ``HEARTBEAT_SHARE`` of the interval, the first one too:
an event loop running late never makes one miss the server's window. A processing server
"might not respond to the heartbeat message", so the silence watchdog only judges a connection
that is not waiting for an answer (a turn has its own answer timeout). The
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
    ServerError,
    ShopAIConnection,
    Status,
    StreamedToken,
    TokenRejected,
    WireHistory,
    log_unknown,
)

__all__ = ["WebSocketConnection"]

log = logging.getLogger(__name__)

# Without any frame (heartbeat answers included) for this many intervals an idle socket is dead.
_SILENT_INTERVALS = 4
# Heartbeats go out this often, as a share of the documented interval.
HEARTBEAT_SHARE = 0.75


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
            status = frame.get("status")
            if isinstance(status, str):
                self._dispatch(Status(status))
        elif kind == "token":
            token = frame.get("token")
            if isinstance(token, str):
                self._dispatch(StreamedToken(token))
        elif kind == "history":
            history = frame.get("history")
            if isinstance(history, list):
                self._dispatch(WireHistory(history))
        elif kind == "error":
            self._dispatch(ServerError(str(frame.get("message", ""))))
        elif kind == "heartbeat":
            pass  # the answer to ours; its arrival already refreshed _last_rx
        else:
            self.metrics.unknown_frames += 1
            log_unknown(kind)

    async def _heartbeat_loop(self) -> None:
        """Send heartbeats on a fixed schedule, and notice a silent idle server."""
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat_interval
        period = interval * HEARTBEAT_SHARE
        due = loop.time() + period
        try:
            while self.alive:
                await asyncio.sleep(max(0.0, due - loop.time()))
                now = loop.time()
                silent = now - self._last_rx
                # while processing, silence is allowed: the turn's answer timeout judges it
                if self.status != "processing" and silent > _SILENT_INTERVALS * interval:
                    log.warning("ShopAI v0.1 server silent for %.0f s; closing", silent)
                    await self.aclose()
                    return
                await self._send({"type": "heartbeat"})
                self.metrics.heartbeat(now - due)
                due += period
                if due <= now:  # the loop was blocked for a whole period: don't burst
                    due = now + period
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
