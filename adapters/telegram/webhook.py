"""Webhook mode: a small aiohttp listener that checks Telegram's secret token.

PTB's own webhook server (tornado) is tied to ``run_webhook``, which owns the event loop; with
several bots in one process each adapter runs this listener instead and feeds PTB's update
queue, as PTB's custom-webhook examples do.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookServer:
    def __init__(
        self,
        *,
        listen: str,
        port: int,
        path: str,
        secret: str,
        on_update: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self._listen = listen
        self._port = port
        self._path = path
        self._secret = secret.encode()
        self._on_update = on_update
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.rejected = 0

    async def start(self) -> int:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self._path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._listen, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            self.rejected += 1
            log.warning(
                "webhook: refused an update with a wrong or missing secret token from %s",
                request.remote,
            )
            return web.Response(status=403)
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=400)
        if not isinstance(data, dict):
            return web.Response(status=400)
        await self._on_update(data)
        return web.Response(status=200)
