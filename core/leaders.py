"""Leader leases for :class:`core.replicas.Replicas`: what exactly one replica may do at a
time (Telegram long polling), taken over within a lease period of its holder's death."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from chatbridge.core.errors import best_effort

if TYPE_CHECKING:
    from chatbridge.core.replicas import Replicas

log = logging.getLogger(__name__)


class LeaderFlag:
    """Whether this replica leads (for readiness)."""

    @property
    def leading(self) -> bool:
        raise NotImplementedError


class Leader(LeaderFlag):
    def __init__(
        self,
        replicas: Replicas,
        name: str,
        on_gain: Callable[[], Awaitable[None]],
        on_lose: Callable[[], Awaitable[None]],
    ) -> None:
        self._replicas = replicas
        self._name = f"leader:{name}"
        self._on_gain = on_gain
        self._on_lose = on_lose
        self._value: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def leading(self) -> bool:
        return self._value is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"replicas:{self._name}")

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._value is not None:
            value, self._value = self._value, None
            with best_effort(log, f"stepping down as leader of {self._name}"):
                await self._on_lose()
            await self._replicas.redis.release(self._name, value)

    async def _run(self) -> None:
        r = self._replicas
        while not self._stopped:
            try:
                if self._value is None:
                    self._value = await r.redis.acquire(self._name, r.replica, r.leases.lease_ms)
                    if self._value is not None:
                        log.info("replica %s leads %s", r.replica, self._name)
                        await self._on_gain()
                elif not await r.redis.renew(self._name, self._value, r.leases.lease_ms):
                    log.warning("replica %s no longer leads %s", r.replica, self._name)
                    self._value = None
                    await self._on_lose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("replica %s: leader lease %s: %s", r.replica, self._name, exc)
            await asyncio.sleep(r.lease / 3)
