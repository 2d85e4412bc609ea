"""Wires configuration into running objects: store, backends, engines, adapters.

Start order: store -> backends -> engines -> adapters (-> HTTP listener). Stop order is the
reverse, so no adapter takes a turn the engine can no longer run, and no engine runs a turn
without its backend and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from bots.config import (
    Config,
    ConsoleBotConfig,
    DiscordBotConfig,
    LoopOSBackendConfig,
    ShopAIBackendConfig,
    TelegramBotConfig,
)
from core.engine import Engine
from core.protocols import Backend, SessionStore
from core.store import open_store

log = logging.getLogger(__name__)


class Adapter(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def connected(self) -> bool: ...


def build_backend(name: str, cfg: LoopOSBackendConfig | ShopAIBackendConfig) -> Backend:
    if isinstance(cfg, LoopOSBackendConfig):
        from core.backends.loopos import LoopOSBackend

        return LoopOSBackend(cfg, name=name)
    from core.backends.shopai import ShopAIBackend

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

    async def start(self) -> None:
        cfg = self.config
        self.store = await open_store(cfg.store.url)
        for name, backend_cfg in cfg.backends.items():
            if any(bot.backend == name for bot in cfg.bots):
                self.backends[name] = build_backend(name, backend_cfg)
        for bot in cfg.bots:
            engine = Engine(
                bot=bot.name,
                backend=self.backends[bot.backend],
                backend_name=bot.backend,
                store=self.store,
                turn_timeout=cfg.limits.turn_timeout,
            )
            self.engines[bot.name] = engine
            self.adapters.append(self._adapter(bot, engine))
        for adapter in self.adapters:
            await adapter.start()
            log.info("bot %s started", adapter.name)

    def _adapter(
        self, bot: ConsoleBotConfig | TelegramBotConfig | DiscordBotConfig, engine: Engine
    ) -> Adapter:
        admins = frozenset(bot.admins)
        if isinstance(bot, ConsoleBotConfig):
            from adapters.console import ConsoleAdapter

            return ConsoleAdapter(
                name=bot.name,
                engine=engine,
                user_id=bot.user_id,
                language=bot.language,
                stdin=self.stdin,
                stdout=self.stdout,
            )
        if isinstance(bot, TelegramBotConfig):
            from adapters.telegram import TelegramAdapter, TelegramOptions

            return TelegramAdapter(
                name=bot.name,
                token=bot.token.get_secret_value(),
                engine=engine,
                options=_options(TelegramOptions, bot),
                admins=admins,
            )
        from adapters.discord_adapter import DiscordAdapter, DiscordOptions

        return DiscordAdapter(
            name=bot.name,
            token=bot.token.get_secret_value(),
            engine=engine,
            options=_options(DiscordOptions, bot),
            admins=admins,
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
        """Graceful shutdown: stop taking updates, finish or interrupt turns, close the rest."""
        for adapter in self.adapters:
            with contextlib.suppress(Exception):
                await adapter.stop()
        grace = self.config.limits.shutdown_grace
        await asyncio.gather(*(e.aclose(grace) for e in self.engines.values()))
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()
        if self.store is not None:
            await self.store.close()


async def _all_finished(consoles: list[Any]) -> None:
    await asyncio.gather(*(c.finished.wait() for c in consoles))


async def run_app(app: App) -> None:
    await app.start()
    try:
        await app.wait()
    finally:
        await app.stop()
