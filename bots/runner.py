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
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar, cast

import msgspec

from chatbridge.bots.config import (
    Config,
    ConsoleBotConfig,
    DiscordBotConfig,
    LoopOSBackendConfig,
    ShopAIBackendConfig,
    TelegramBotConfig,
)
from chatbridge.bots.gctune import tune_gc
from chatbridge.core.access import AccessGate, AccessPolicy
from chatbridge.core.engine import Engine
from chatbridge.core.errors import StartupFailed, best_effort
from chatbridge.core.flood import FloodControl
from chatbridge.core.metrics import Metrics
from chatbridge.core.protocols import (
    Backend,
    CountsConnections,
    Journal,
    SessionStore,
    StoredReplies,
)
from chatbridge.core.secrets import safe_error
from chatbridge.core.store import journal_of, open_store, resolved_store
from chatbridge.core.texts import Catalogue, UserTexts

if TYPE_CHECKING:
    from chatbridge.bots.http import HealthServer
    from chatbridge.core.budget import SharedFlood
    from chatbridge.core.replicas import Replicas

log = logging.getLogger(__name__)

EXTRA_OF = {"telegram": "telegram", "discord": "discord"}
JOURNAL_KEEP = timedelta(days=7)
JOURNAL_PRUNE_EVERY = 3600.0  # seconds


class StartupError(Exception):
    """Start-up failed for good; ``str()`` is one line: what failed and what to do."""


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


_Options = TypeVar("_Options", bound=msgspec.Struct)


def _options(model: type[_Options], bot: _Options) -> _Options:
    """The platform's options of a bot's table (which adds name, token...): already checked."""
    return model(**{name: getattr(bot, name) for name in model.__struct_fields__})


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
    stopped_by: signal.Signals | None = None  # SIGINT: the command exits 130, as shells expect
    _pruner: asyncio.Task[None] | None = None
    _redis_url: str | None = None
    _routes_client: Any = None  # several replicas: the Redis client of Discord's route buckets

    async def start(self) -> None:
        cfg = self.config
        url, path = resolved_store(cfg.store.url)
        if path is not None:
            log.info("session store: %s", path)
        try:
            self.store = await open_store(url)
        except Exception as exc:
            raise StartupError(
                f"the store could not be opened: {safe_error(exc)}; check [store] url "
                "(and that its directory exists and is writable, or the server is up)"
            ) from None
        if _is_redis(url):
            # several replicas may share this Redis: it orders and distributes the turns
            # (imported here: redis is an optional extra)
            from chatbridge.core.replicas import Replicas, default_replica_name
            from chatbridge.core.store.redis_coordination import RedisCoordination

            self._redis_url = url
            self.replicas = Replicas(
                # room for a burst of turns' commands (redis-py's default: 100, then errors)
                RedisCoordination.from_url(url),
                replica=cfg.replicas.name or default_replica_name(),
                partitions=cfg.replicas.partitions,
                lease=cfg.replicas.lease,
            )
            replicas = self.replicas
            try:
                await replicas.check()  # before any bot takes a message
            except RuntimeError as exc:
                raise StartupError(str(exc)) from None
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
                texts=UserTexts(Catalogue(bot.locale, bot.texts)),
                flood=self._flood(),
                observer=self.metrics,
                turn_timeout=cfg.limits.turn_timeout,
                work=self.replicas,
            )
            self.metrics.watch_queued_turns(bot.name, _queued_of(engine))
            self.metrics.sessions_changed(bot.name, await engine.count_sessions())
            self.engines[bot.name] = engine
            self.adapters.append(self._adapter_or_explain(bot, engine))
        if cfg.http.listen:
            # up before the bots connect, so /readyz can report them as not ready yet
            checks = {a.name: _connected_of(a) for a in self.adapters}
            # imported here: aiohttp's server side costs a process without [http] ~1.7 MiB
            from chatbridge.bots.http import HealthServer, standard_readiness

            readiness = standard_readiness(self.store, checks, self.replicas)
            self.http = HealthServer(
                cfg.http.listen, self.metrics, readiness, on_scrape=self._refresh_gauges
            )
            await self.http.start()
        for adapter in self.adapters:
            await self._start_adapter(adapter)
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
        from chatbridge.core.budget import SharedRouteBuckets, SharedWindows
        from chatbridge.core.store.redis import redis_client

        if self._routes_client is None and self._redis_url is not None:
            self._routes_client = redis_client(self._redis_url)
        name = f"dc:{token_digest}"
        return {
            "budget": SharedWindows(self.replicas.redis, name),
            "routes": SharedRouteBuckets(self._routes_client, name),
        }

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

    async def _start_adapter(self, adapter: Adapter) -> None:
        """Start one bot, riding out a platform outage for ``limits.startup_retry`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.limits.startup_retry
        delay = 1.0
        while True:
            try:
                await adapter.start()
                return
            except StartupFailed as exc:
                remaining = deadline - loop.time()
                if not exc.retryable or remaining <= 0:
                    waited = " (gave up retrying)" if exc.retryable else ""
                    raise StartupError(f"{exc}{waited}; {exc.hint}") from None
                pause = min(delay, remaining)
                log.warning("%s; retrying in %.1f s", exc, pause)
            except Exception as exc:
                raise StartupError(
                    f"bot {adapter.name} could not start: {safe_error(exc)}"
                ) from None
            await asyncio.sleep(pause)
            delay = min(delay * 2, 30.0)

    def _adapter_or_explain(
        self, bot: ConsoleBotConfig | TelegramBotConfig | DiscordBotConfig, engine: Engine
    ) -> Adapter:
        try:
            return self._adapter(bot, engine)
        except ImportError as exc:
            extra = EXTRA_OF.get(bot.platform, bot.platform)
            raise StartupError(
                f"bot {bot.name}: the {bot.platform} support is not installed ({exc.name} "
                f"missing); install chatbridge with it: pip install '/path/to/checkout[{extra}]' "
                f"(or the built wheel with [{extra}])"
            ) from None

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
        access = self._access_gate(bot, engine)
        if isinstance(bot, TelegramBotConfig):
            from chatbridge.adapters.telegram import TelegramAdapter, TelegramOptions

            options = _options(TelegramOptions, bot)
            # "all" makes the adapter hand every group message to the access gate
            group_reply = "all" if bot.effective_group_policy == "all" else "mention"
            return TelegramAdapter(
                name=bot.name,
                token=bot.token.get_secret_value(),
                engine=engine,
                options=msgspec.structs.replace(options, group_reply=group_reply),
                admins=admins,
                metrics=self.metrics,
                access=access,
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
            access=access,
            **self._shared_discord(_token_digest(bot.token.get_secret_value())),
        )

    def _access_gate(self, bot: TelegramBotConfig | DiscordBotConfig, engine: Engine) -> AccessGate:
        if isinstance(bot, TelegramBotConfig):
            lists: dict[str, list[int]] = {"allowed_chats": bot.allowed_chats}
        else:
            lists = {
                "allowed_guilds": bot.allowed_guilds,
                "allowed_channels": bot.allowed_channels,
                "allowed_roles": bot.allowed_roles,
            }
        policy = AccessPolicy.build(
            allowed_users=bot.allowed_users,
            admins=bot.admins,
            group_policy=bot.effective_group_policy,
            **lists,
        )
        return AccessGate(
            bot.name,
            bot.platform,
            policy,
            engine.texts.catalogue,
            on_refused=self.metrics.access_refused,
        )

    async def wait(self) -> None:
        """Until a stop signal, or until every bot is a console bot whose input ended."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop_on(sig: signal.Signals) -> None:
            self.stopped_by = sig
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop_on, sig)
        consoles = [a for a in self.adapters if hasattr(a, "finished")]
        waiters: list[asyncio.Task[Any]] = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(self._watch_failures()),
        ]
        if consoles and len(consoles) == len(self.adapters):
            waiters.append(asyncio.create_task(_all_finished(consoles)))
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a bot's connection failed for good: StartupError
        finally:
            for waiter in waiters:
                waiter.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _watch_failures(self) -> None:
        """Raise when a bot's platform connection ended for good after start (Discord's
        gateway refusing an intent): a dead bot must not look like a running service."""
        while True:
            for adapter in self.adapters:
                failure = getattr(adapter, "failure", None)
                if failure:
                    raise StartupError(str(failure))
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Graceful shutdown.

        Adapters stop taking updates first (Telegram leaves unread updates on its server for the
        next process); then running turns get ``shutdown_grace`` seconds to finish, while the
        platform connection is still open. Turns queued behind them are not started: they stay
        in the journal and the next start answers them, with no notice. A turn still running
        after the grace is cut and keeps the journal state it reached, so the next start
        resumes it by recovery's rules (core/recovery.py). Only then do adapters disconnect,
        backends close their connections and the store closes.
        """
        for adapter in self.adapters:
            pause = getattr(adapter, "stop_receiving", None)
            if pause is not None:
                with best_effort(log, f"pausing bot {adapter.name}'s intake"):
                    await pause()
        if self.replicas is not None:
            self.replicas.stop_starting()  # what is queued here stays for the others
            await self.replicas.stop_leading()  # another replica polls from now on
        grace = self.config.limits.shutdown_grace
        await asyncio.gather(*(e.aclose(grace) for e in self.engines.values()))
        if self.replicas is not None:
            # hand partitions and leadership back at once, not after the lease expires
            with best_effort(log, "handing this replica's partitions back"):
                await self.replicas.stop()
        for adapter in self.adapters:
            with best_effort(log, f"stopping bot {adapter.name}"):
                await adapter.stop()
        if self.http is not None:
            await self.http.stop()
        for backend in self.backends.values():
            with best_effort(log, "closing a backend"):
                await backend.aclose()
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        if self.replicas is not None:
            with best_effort(log, "closing the replicas' Redis connection"):
                await self.replicas.redis.close()
        if self._routes_client is not None:
            with best_effort(log, "closing the route buckets' Redis connection"):
                await self._routes_client.aclose()
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
    """Start, wait for a stop signal, stop. A failed start stops what did start (closing the
    store's thread, which would otherwise keep the process alive) and raises."""
    try:
        await app.start()
    except BaseException:
        with best_effort(log, "stopping what had started"):
            await app.stop()
        raise
    # after start: what starting allocated is never examined again
    tune_gc(
        many_connections=any(
            isinstance(b, ShopAIBackendConfig) for b in app.config.backends.values()
        )
    )
    try:
        await app.wait()
    finally:
        await app.stop()
