"""The operator's HTTP listener: ``/healthz``, ``/readyz`` and ``/metrics``.

Opened only when ``[http] listen = "HOST:PORT"`` is configured, so the demo opens no port.

- ``/healthz``: 200 while the process serves HTTP at all (liveness; no dependency checked).
- ``/readyz``: 200 when every readiness check is true, else 503; JSON body
  ``{"ready": bool, "checks": {"store": true, "bot:sellers": false, ...}}``.
- ``/metrics``: Prometheus text format from :class:`core.metrics.Metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Protocol

from aiohttp import web

from chatbridge.core.metrics import Metrics
from chatbridge.core.protocols import SessionStore

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]


def parse_listen(listen: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8080"`` for IPv6) -> ``(host, port)``; port 0 = any free."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen must look like HOST:PORT, e.g. 127.0.0.1:8080 (got {listen!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class ReplicaState(Protocol):
    @property
    def healthy(self) -> bool: ...


def standard_readiness(
    store: SessionStore | None,
    bots: Mapping[str, Callable[[], bool]],
    replica: ReplicaState | None = None,
) -> ReadinessCheck:
    """The usual checks: ``store`` (``await store.ping()``) and ``bot:<name>`` per bot (its
    callable says whether it is connected to its platform); with several replicas also
    ``replica`` (Redis answered its last heartbeat and lease renewal)."""

    async def check() -> Mapping[str, bool]:
        checks: dict[str, bool] = {}
        if store is not None:
            try:
                checks["store"] = await store.ping()
            except Exception:
                checks["store"] = False
        if replica is not None:
            checks["replica"] = replica.healthy
        for name, connected in bots.items():
            try:
                checks[f"bot:{name}"] = bool(connected())
            except Exception:
                checks[f"bot:{name}"] = False
        return checks

    return check


class HealthServer:
    """An aiohttp server for health, readiness and metrics. ``start()`` / ``stop()``, or
    ``async with``. After start, :attr:`port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        readiness: ReadinessCheck,
        *,
        on_scrape: Callable[[], Awaitable[None]] | None = None,
        check_timeout: float = 5.0,
    ) -> None:
        self.host, self._requested_port = parse_listen(listen)
        self.metrics = metrics
        self._readiness = readiness
        self._on_scrape = on_scrape
        self._check_timeout = check_timeout
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._app = app

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("HealthServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        # No access log: scrapes every few seconds would drown the turn logs.
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("http listener on %s (/healthz /readyz /metrics)", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- handlers -----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self._check_timeout):
                checks = {str(k): bool(v) for k, v in (await self._readiness()).items()}
            ready = all(checks.values())
            body: dict[str, object] = {"ready": ready, "checks": checks}
        except Exception as exc:  # a broken check means "not ready", not a 500
            log.warning("readiness check failed: %s", type(exc).__name__)
            ready = False
            body = {"ready": False, "checks": {}, "error": type(exc).__name__}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._on_scrape is not None:
            try:
                async with asyncio.timeout(self._check_timeout):
                    await self._on_scrape()
            except Exception:
                # Stale gauges beat no metrics at all.
                log.warning("refreshing metrics before a scrape failed", exc_info=True)
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = self.metrics.content_type
        return response
