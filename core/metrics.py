"""Prometheus metrics on a dedicated registry (never the global one: tests create several).

One :class:`Metrics` per process; the engine reports through the ``TurnObserver`` methods
(``turn_finished``, ``backend_error``, ``queue_changed``, ``sessions_changed``), adapters
through ``message_sent`` / ``message_edited`` / ``rate_limited``, backends through
``backend_latency`` / ``backend_connections``. :meth:`Metrics.render` is what ``/metrics``
serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# Backend answers range from a fraction of a second (catalog lookups) to the LoopOS 120 s
# timeout (image analysis); buckets cover both ends.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, float("inf"))


class Metrics:
    """Every chatbridge metric, with typed methods to update them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "chatbridge"):
        # The *_created series double the output and no dashboard reads them.
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        ns, reg = namespace, self.registry
        self.turns = Counter(
            "turns",
            "Turns finished, by outcome (ok, failed, interrupted, flood...)",
            ["bot", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.turn_seconds = Histogram(
            "turn_duration_seconds",
            "Wall time of a turn, queueing excluded",
            ["bot"],
            namespace=ns,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.backend_latency_seconds = Histogram(
            "backend_latency_seconds",
            "Time a backend took to answer one turn",
            ["bot", "backend"],
            namespace=ns,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.backend_errors = Counter(
            "backend_errors",
            "Backend failures by kind (validation, auth, unavailable...)",
            ["bot", "kind"],
            namespace=ns,
            registry=reg,
        )
        self.messages_sent = Counter(
            "messages_sent",
            "Platform messages sent",
            ["bot", "platform"],
            namespace=ns,
            registry=reg,
        )
        self.messages_edited = Counter(
            "messages_edited",
            "Platform message edits (streaming updates)",
            ["bot", "platform"],
            namespace=ns,
            registry=reg,
        )
        self.rate_limits = Counter(
            "platform_rate_limited",
            "Platform 429 answers (rate limited)",
            ["bot", "platform"],
            namespace=ns,
            registry=reg,
        )
        self.refusals = Counter(
            "platform_delivery_refused",
            "Messages a platform refused for good (bot blocked, chat gone)",
            ["bot", "platform"],
            namespace=ns,
            registry=reg,
        )
        self.open_sessions = Gauge(
            "open_sessions",
            "Sessions in the store",
            ["bot"],
            namespace=ns,
            registry=reg,
        )
        self.open_backend_connections = Gauge(
            "backend_connections",
            "Open connections to a backend (WebSocket / Socket.IO)",
            ["backend"],
            namespace=ns,
            registry=reg,
        )
        self.queued = Gauge(
            "queued_turns",
            "Turns waiting behind another turn of their conversation",
            ["bot"],
            namespace=ns,
            registry=reg,
        )
        # several replicas: every sample carries replica="<name>" (see render)
        self.replica: str | None = None
        self.partitions_owned = Gauge(
            "replica_partitions",
            "Work partitions whose lease this replica holds (several replicas on Redis)",
            namespace=ns,
            registry=reg,
        )
        self.replicas_live = Gauge(
            "replicas_live",
            "Replicas with a current heartbeat in Redis, as this replica sees them",
            namespace=ns,
            registry=reg,
        )
        self.access_refusals = Counter(
            "access_refused",
            "Messages refused by a bot's access control (allowed_* lists)",
            ["bot", "platform"],
            namespace=ns,
            registry=reg,
        )
        self.bot_up = Gauge(
            "bot_connected",
            "1 while a bot is connected to its platform",
            ["bot"],
            namespace=ns,
            registry=reg,
        )

    # --- engine (core.engine.TurnObserver) ----------------------------------------------------

    def turn_finished(self, bot: str, outcome: str, seconds: float) -> None:
        self.turns.labels(bot, outcome).inc()
        self.turn_seconds.labels(bot).observe(max(0.0, seconds))

    def backend_error(self, bot: str, kind: str) -> None:
        self.backend_errors.labels(bot, str(kind)).inc()

    def queue_changed(self, bot: str, queued: int) -> None:
        self.queued.labels(bot).set(queued)

    def sessions_changed(self, bot: str, count: int) -> None:
        self.open_sessions.labels(bot).set(count)

    # --- backends -----------------------------------------------------------------------------

    def backend_latency(self, bot: str, backend: str, seconds: float) -> None:
        self.backend_latency_seconds.labels(bot, backend).observe(max(0.0, seconds))

    @contextmanager
    def time_backend(self, bot: str, backend: str) -> Iterator[None]:
        """Observe the duration of the ``with`` body (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.backend_latency(bot, backend, time.perf_counter() - start)

    def backend_connections(self, backend: str, count: int) -> None:
        self.open_backend_connections.labels(backend).set(count)

    def watch_backend_connections(self, backend: str, read: Callable[[], float]) -> None:
        """Read the gauge from ``read()`` at every scrape (e.g. a pool's ``len``)."""
        self.open_backend_connections.labels(backend).set_function(read)

    def watch_queued_turns(self, bot: str, read: Callable[[], float]) -> None:
        """Read the gauge from ``read()`` at every scrape (e.g. ``lambda: engine.queued_turns``)."""
        self.queued.labels(bot).set_function(read)

    def watch_replica(
        self, name: str, owned: Callable[[], float], live: Callable[[], float]
    ) -> None:
        """Label every sample with ``replica`` and read the partition gauges at each scrape."""
        self.replica = name
        self.partitions_owned.set_function(owned)
        self.replicas_live.set_function(live)

    # --- adapters -----------------------------------------------------------------------------

    def message_sent(self, bot: str, platform: str, count: int = 1) -> None:
        self.messages_sent.labels(bot, platform).inc(count)

    def message_edited(self, bot: str, platform: str, count: int = 1) -> None:
        self.messages_edited.labels(bot, platform).inc(count)

    def rate_limited(self, bot: str, platform: str) -> None:
        self.rate_limits.labels(bot, platform).inc()

    def delivery_refused(self, bot: str, platform: str) -> None:
        self.refusals.labels(bot, platform).inc()

    def access_refused(self, bot: str, platform: str) -> None:
        self.access_refusals.labels(bot, platform).inc()

    def bot_connected(self, bot: str, connected: bool) -> None:
        self.bot_up.labels(bot).set(1 if connected else 0)

    # --- exposition ---------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        text = generate_latest(self.registry)
        if self.replica is None:
            return text
        return _with_label(text, "replica", self.replica)

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's current value (tests and the admin CLI), e.g.
        ``value("chatbridge_turns_total", bot="sellers", outcome="ok")``."""
        return self.registry.get_sample_value(name, labels)


def _with_label(text: bytes, name: str, value: str) -> bytes:
    """Add ``name="value"`` to every sample line of a Prometheus text exposition."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    label = f'{name}="{escaped}"'
    out = []
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            metric, sep, rest = line.rpartition(" ")
            if metric.endswith("}"):
                brace = metric.index("{")
                inner = metric[brace + 1 : -1]
                metric = f"{metric[:brace]}{{{label}{',' if inner else ''}{inner}}}"
            else:
                metric = f"{metric}{{{label}}}"
            line = metric + sep + rest
        out.append(line)
    return ("\n".join(out) + "\n").encode()
