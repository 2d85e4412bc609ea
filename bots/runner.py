"""Wires configuration into running objects: store, backends, engines, adapters.

Start order: store -> backends -> engines -> adapters (-> HTTP listener). Stop order is the
reverse, so no adapter takes a turn the engine can no longer run, and no engine runs a turn
without its backend and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

from chatbridge.bots.config import (
    Config,
    ConsoleBotConfig,
    DiscordBotConfig,
    LoopOSBackendConfig,
    ShopAIBackendConfig,
    TelegramBotConfig,
)
from chatbridge.bots.http import HealthServer, standard_readiness
from chatbridge.core.engine import Engine
from chatbridge.core.flood import FloodControl
from chatbridge.core.metrics import Metrics
from chatbridge.core.protocols import (
    Backend,
    CountsConnections,
    Journal,
    SessionStore,
    StoredReplies,
)
from chatbridge.core.store import journal_of, open_store

if TYPE_CHECKING:
    from chatbridge.core.budget import SharedFlood
    from chatbridge.core.replicas import Replicas

log = logging.getLogger(__name__)

JOURNAL_KEEP = timedelta(days=7)
JOURNAL_PRUNE_EVERY = 3600.0  # seconds


class Adapter(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def connected(self) -> bool: ...


def build_backend(name: str, cfg: LoopOSBackendConfig | ShopAIBackendConfig) -> Backend:
    if isinstance(cfg, LoopOSBackendConfig):
        from chatbridge.core.backends.loopos import LoopOSBackend

        return LoopOSBackend(cfg, name=name)
    from chatbridge.core.backends.shopai import ShopAIBackend

    return ShopAIBackend(cfg, name=name)


def _options(model: type[Any], bot: Any) -> Any:
    return model.model_validate(
        {k: getattr(bot, k) for k in model.model_fields if k in type(bot).model_fields}
    )


@dataclass
class App:
    """Everything one ``chatbridge run`` process runs."""

    config: Config
    stdin: TextIO | None = None
    stdout: TextIO | None = None
    store: SessionStore | None = None
    backends: dict[str, Backend] = field(default_factory=dict)
    engines: dict[str, Engine] = field(default_factory=dict)
    adapters: list[Adapter] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    http: HealthServer | None = None
    replicas: Replicas | None = None
    _pruner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        self.store = await open_store(cfg.store.url)
        if _is_redis(cfg.store.url):
            # several replicas may share this Redis: it orders and distributes the turns
            # (imported here: redis is an optional extra)
            from chatbridge.core.replicas import Replicas, default_replica_name
            from chatbridge.core.store.redis_coordination import RedisCoordination

            self.replicas = Replicas(
                RedisCoordination.from_url(cfg.store.url),
                replica=cfg.replicas.name or default_replica_name(),
                partitions=cfg.replicas.partitions,
                lease=cfg.replicas.lease,
            )
            replicas = self.replicas
            await replicas.check()  # before any bot takes a message
            self.metrics.watch_replica(
                replicas.replica, lambda: float(len(replicas.owned)), lambda: len(replicas.live)
            )
        journal = journal_of(self.store)
        if journal is not None:
            self._pruner = asyncio.create_task(_prune_forever(journal), name="journal-prune")
        for name, backend_cfg in cfg.backends.items():
            if any(bot.backend == name for bot in cfg.bots):
                backend = build_backend(name, backend_cfg)
                self.backends[name] = backend
                if isinstance(backend, CountsConnections):
                    self.metrics.watch_backend_connections(name, _connections_of(backend))
        for bot in cfg.bots:
            engine = Engine(
                bot=bot.name,
                backend=self.backends[bot.backend],
                backend_name=bot.backend,
                store=self.store,
                journal=journal,
                flood=self._flood(),
                observer=self.metrics,
                turn_timeout=cfg.limits.turn_timeout,
                work=self.replicas,
            )
            self.metrics.watch_queued_turns(bot.name, _queued_of(engine))
            self.metrics.sessions_changed(bot.name, await engine.count_sessions())
            self.engines[bot.name] = engine
            self.adapters.append(self._adapter(bot, engine))
        if cfg.http.listen:
            # up before the bots connect, so /readyz can report them as not ready yet
            checks = {a.name: _connected_of(a) for a in self.adapters}
            readiness = standard_readiness(self.store, checks, self.replicas)
            self.http = HealthServer(
                cfg.http.listen, self.metrics, readiness, on_scrape=self._refresh_gauges
            )
            await self.http.start()
        for adapter in self.adapters:
            await adapter.start()
            log.info("bot %s started", adapter.name)
        if self.replicas is not None:
            for adapter in self.adapters:
                if hasattr(adapter, "surface_for"):  # core.protocols.StoredReplies
                    self.replicas.serve(self.engines[adapter.name], cast(StoredReplies, adapter))
            await self.replicas.start()

    def _flood(self) -> FloodControl | SharedFlood:
        limit = self.config.limits.turns_per_minute
        if self.replicas is not None and self.config.replicas.shared_budgets:
            from chatbridge.core.budget import SharedFlood

            return SharedFlood(self.replicas.redis, limit)
        return FloodControl(limit)

    def _shared_discord(self, token_digest: str) -> dict[str, Any]:
        """Several replicas: the Discord adapter's global budget counted across them."""
        if self.replicas is None or not self.config.replicas.shared_budgets:
            return {}
        from chatbridge.core.budget import SharedWindows

        return {"budget": SharedWindows(self.replicas.redis, f"dc:{token_digest}")}

    def _shared(self, token_digest: str) -> dict[str, Any]:
        """Several replicas: the Telegram adapter's shared budget and leader election."""
        replicas = self.replicas
        if replicas is None:
            return {}
        budget = None
        if self.config.replicas.shared_budgets:
            from chatbridge.core.budget import SharedWindows

            budget = SharedWindows(replicas.redis, f"tg:{token_digest}")
        return {"budget": budget, "elect": replicas.leader}

    async def _refresh_gauges(self) -> None:
        for name, engine in self.engines.items():
            self.metrics.sessions_changed(name, await engine.count_sessions())
            adapter = next(a for a in self.adapters if a.name == name)
            self.metrics.bot_connected(name, adapter.connected)

    def _adapter(
        self, bot: ConsoleBotConfig | TelegramBotConfig | DiscordBotConfig, engine: Engine
    ) -> Adapter:
        admins = frozenset(bot.admins)
        if isinstance(bot, ConsoleBotConfig):
            from chatbridge.adapters.console import ConsoleAdapter

            return ConsoleAdapter(
                name=bot.name,
                engine=engine,
                user_id=bot.user_id,
                language=bot.language,
                stdin=self.stdin,
                stdout=self.stdout,
            )
        if isinstance(bot, TelegramBotConfig):
            from chatbridge.adapters.telegram import TelegramAdapter, TelegramOptions

            return TelegramAdapter(
                name=bot.name,
                token=bot.token.get_secret_value(),
                engine=engine,
                options=_options(TelegramOptions, bot),
                admins=admins,
                metrics=self.metrics,
                **self._shared(_token_digest(bot.token.get_secret_value())),
            )
        from chatbridge.adapters.discord_adapter import DiscordAdapter, DiscordOptions

        return DiscordAdapter(
            name=bot.name,
            token=bot.token.get_secret_value(),
            engine=engine,
            options=_options(DiscordOptions, bot),
            admins=admins,
            metrics=self.metrics,
            **self._shared_discord(_token_digest(bot.token.get_secret_value())),
        )

    async def wait(self) -> None:
        """Until a stop signal, or until every bot is a console bot whose input ended."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        consoles = [a for a in self.adapters if hasattr(a, "finished")]
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if consoles and len(consoles) == len(self.adapters):
            waiters.append(asyncio.create_task(_all_finished(consoles)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def stop(self) -> None:
        """Graceful shutdown.

        Adapters stop taking updates first (Telegram leaves unread updates on its server for the
        next process); then running turns get ``shutdown_grace`` seconds, and users whose turn
        could not finish are told so while the platform connection is still open; only then do
        adapters disconnect, backends close their connections and the store closes.
        """
        for adapter in self.adapters:
            pause = getattr(adapter, "stop_receiving", None)
            if pause is not None:
                with contextlib.suppress(Exception):
                    await pause()
        if self.replicas is not None:
            self.replicas.stop_starting()  # what is queued here stays for the others
            await self.replicas.stop_leading()  # another replica polls from now on
        grace = self.config.limits.shutdown_grace
        await asyncio.gather(*(e.aclose(grace) for e in self.engines.values()))
        if self.replicas is not None:
            # hand partitions and leadership back at once, not after the lease expires
            with contextlib.suppress(Exception):
                await self.replicas.stop()
        for adapter in self.adapters:
            with contextlib.suppress(Exception):
                await adapter.stop()
        if self.http is not None:
            await self.http.stop()
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        if self.replicas is not None:
            with contextlib.suppress(Exception):
                await self.replicas.redis.close()
        if self.store is not None:
            await self.store.close()


def _is_redis(url: str) -> bool:
    return url.split("://", 1)[0].lower() in ("redis", "rediss", "unix") if "://" in url else False


def _token_digest(token: str) -> str:
    """Names a bot token's shared budget in Redis without writing the token there."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


async def _prune_forever(journal: Journal) -> None:
    """Forget finished turns older than :data:`JOURNAL_KEEP`, at start and then hourly (Telegram
    itself forgets an unconfirmed update after a day, so a week covers any redelivery)."""
    while True:
        try:
            pruned = await journal.prune(JOURNAL_KEEP)
        except Exception:
            log.exception("journal: pruning failed")
        else:
            if pruned:
                log.info("journal: forgot %d finished turns older than %s", pruned, JOURNAL_KEEP)
        await asyncio.sleep(JOURNAL_PRUNE_EVERY)


def _connections_of(backend: CountsConnections) -> Callable[[], float]:
    return lambda: float(backend.open_connections)


def _queued_of(engine: Engine) -> Callable[[], float]:
    return lambda: float(engine.queued_turns)


def _connected_of(adapter: Adapter) -> Callable[[], bool]:
    return lambda: adapter.connected


async def _all_finished(consoles: list[Any]) -> None:
    await asyncio.gather(*(c.finished.wait() for c in consoles))


async def run_app(app: App) -> None:
    await app.start()
    try:
        await app.wait()
    finally:
        await app.stop()
