"""What both ShopAI protocol versions have in common: one live connection for one chat token.

The two documents describe the same conversation over two transports: the server pushes
``status`` / ``token`` / ``history`` / ``error`` whenever it likes ("there are no server
responses, only messages from the server"), and the client sends a user message or asks for the
history. A subclass only moves frames; this class keeps the server status and hands the
frames of the running turn to :mod:`core.backends.shopai.backend` through a queue that exists
only during a turn, so an idle connection buffers nothing.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatbridge.core.backends.shopai.settings import ShopAISettings
from chatbridge.core.errors import best_effort

__all__ = [
    "Closed",
    "ConnectFailed",
    "ServerError",
    "ServerEvent",
    "ShopAIConnection",
    "ShopAIMetrics",
    "Status",
    "StreamedToken",
    "TokenRejected",
    "WireHistory",
]

log = logging.getLogger(__name__)


class TokenRejected(Exception):
    """The server refused the chat token (connection closed at once, or connect rejected)."""


class ConnectFailed(Exception):
    """The server could not be reached; worth another try with backoff."""


# One event type per kind of server message, matched by the backend like the engine matches
# its events; ``Closed`` is the transport's own (the connection ended).


@dataclass(frozen=True, slots=True)
class Status:
    status: str  # "operational", "processing", or whatever a newer server says


@dataclass(frozen=True, slots=True)
class StreamedToken:
    text: str


@dataclass(frozen=True, slots=True)
class WireHistory:
    entries: list[Any]  # the server's history as sent: dicts with "type" and "content"


@dataclass(frozen=True, slots=True)
class ServerError:
    message: str


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


ServerEvent = Status | StreamedToken | WireHistory | ServerError | Closed


@dataclass
class ShopAIMetrics:
    """Counters a deployment (or the benchmark) reads; ``on_heartbeat`` gets each lateness."""

    connections_opened: int = 0
    reconnects: int = 0
    tokens: int = 0
    heartbeats: int = 0
    heartbeat_lateness_max: float = 0.0
    unknown_frames: int = 0
    on_heartbeat: Callable[[float], None] | None = field(default=None, repr=False)

    def heartbeat(self, lateness: float) -> None:
        self.heartbeats += 1
        self.heartbeat_lateness_max = max(self.heartbeat_lateness_max, lateness)
        if self.on_heartbeat is not None:
            self.on_heartbeat(lateness)


_logged_unknown: set[str] = set()


def log_unknown(kind: object) -> None:
    """Unknown frame types are expected ("be prepared for every message type"): log once each."""
    name = str(kind)[:40]
    if name not in _logged_unknown and len(_logged_unknown) < 100:
        _logged_unknown.add(name)
        log.info("ShopAI sent a frame of unknown type %r; ignoring it (logged once)", name)


class ShopAIConnection(ABC):
    """One open connection for one chat token; subclasses implement the transport."""

    protocol: str = "?"

    def __init__(self, settings: ShopAISettings, token: str, metrics: ShopAIMetrics) -> None:
        self.settings = settings
        self.token = token
        self.metrics = metrics
        self.status = "connecting"
        self.close_reason = ""
        self._got_status = asyncio.Event()
        self._operational = asyncio.Event()
        self._closed = asyncio.Event()
        self._sink: asyncio.Queue[ServerEvent] | None = None

    # --- transport, per protocol version ------------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Open the transport; raise TokenRejected or ConnectFailed."""

    @abstractmethod
    async def send_message(self, text: str) -> None: ...

    @abstractmethod
    async def request_history(self) -> None: ...

    @abstractmethod
    async def _close_transport(self) -> None: ...

    # --- shared behaviour ----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and wait for the server's first ``status``.

        A connection that closes before any status is how v0.1 refuses a token ("established,
        but the server will close it immediately").
        """
        await self._connect()
        waiter = asyncio.ensure_future(self._got_status.wait())
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait(
                (waiter, closer),
                timeout=self.settings.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
            closer.cancel()
        if self._got_status.is_set():
            self.metrics.connections_opened += 1
            return
        if self._closed.is_set():
            raise TokenRejected(self.close_reason or "closed before the first status")
        await self.aclose()
        raise ConnectFailed("no status from the server within the connect timeout")

    @property
    def alive(self) -> bool:
        return not self._closed.is_set()

    @property
    def operational(self) -> bool:
        return self.alive and self._operational.is_set()

    def begin_turn(self) -> asyncio.Queue[ServerEvent]:
        self._sink = asyncio.Queue()
        if self._closed.is_set():
            self._sink.put_nowait(Closed(self.close_reason))
        return self._sink

    def end_turn(self, sink: asyncio.Queue[ServerEvent]) -> None:
        if self._sink is sink:
            self._sink = None

    def mark_processing(self) -> None:
        """After sending, the session is ``processing`` until the server says otherwise."""
        self.status = "processing"
        self._operational.clear()

    def mark_operational(self) -> None:
        self.status = "operational"
        self._operational.set()

    async def wait_operational(self, timeout: float) -> bool:
        """True once the server is operational; False on timeout or when the connection ends."""
        if self.operational:
            return True
        if not self.alive:
            return False
        waiter = asyncio.ensure_future(self._operational.wait())
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait(
                (waiter, closer), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            closer.cancel()
        return self.operational

    def _dispatch(self, event: ServerEvent) -> None:
        """Called by the transport for every frame it understood."""
        if isinstance(event, Status):
            if event.status == "operational":
                self.mark_operational()
            else:
                self.status = event.status
                self._operational.clear()
            self._got_status.set()
        elif isinstance(event, StreamedToken):
            self.metrics.tokens += 1
        if self._sink is not None:
            self._sink.put_nowait(event)

    def _on_closed(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self.status = "closed"
        self._operational.clear()
        self._closed.set()
        if self._sink is not None:
            self._sink.put_nowait(Closed(reason))

    async def aclose(self) -> None:
        with best_effort(log, "closing the ShopAI transport"):
            await asyncio.wait_for(self._close_transport(), timeout=2.0)
        self._on_closed("closed by client")
