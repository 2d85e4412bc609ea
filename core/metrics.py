"""Prometheus metrics, kept as plain numbers; prometheus_client is imported only to expose them.

One :class:`Metrics` per process (never a global registry: tests create several); the engine
reports through the ``TurnObserver`` methods (``turn_finished``, ``backend_error``,
``queue_changed``, ``sessions_changed``), adapters through ``message_sent`` /
``message_edited`` / ``rate_limited``, backends through ``backend_latency`` /
``backend_connections``. :meth:`Metrics.render` is what ``/metrics`` serves.

Why not prometheus_client's own Counter and Histogram objects: only a process with an
``[http]`` listener ever shows its metrics, and the library costs every other process about
1.1 MiB of imports (and a lock per update). The numbers live in dicts here; the first
:meth:`~Metrics.render` or :meth:`~Metrics.value` builds a registry whose one collector reads
them, so the text format is the library's own.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Backend answers range from a fraction of a second (catalog lookups) to the LoopOS 120 s
# timeout (image analysis); buckets cover both ends.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, float("inf"))

Labels = tuple[str, ...]


class _Family:
    """One metric: its samples by label values, as prometheus_client would count them."""

    __slots__ = ("buckets", "doc", "kind", "labels", "name", "readers", "values")

    def __init__(
        self,
        kind: str,
        name: str,
        doc: str,
        labels: Labels = (),
        buckets: tuple[float, ...] | None = None,
    ) -> None:
        self.kind, self.name, self.doc, self.labels = kind, name, doc, labels
        self.buckets = tuple(float(b) for b in buckets or ())
        # counters and gauges: a float per label set; histograms: bucket counts, then the sum
        self.values: dict[Labels, Any] = {}
        self.readers: dict[Labels, Callable[[], float]] = {}  # gauges read at each scrape
        if not labels and kind != "histogram":
            self.values[()] = 0.0  # an unlabelled metric shows 0 before it is set

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def set(self, labels: Labels, value: float) -> None:
        self.readers.pop(labels, None)
        self.values[labels] = float(value)

    def read_from(self, labels: Labels, read: Callable[[], float]) -> None:
        self.values.setdefault(labels, 0.0)
        self.readers[labels] = read

    def observe(self, labels: Labels, amount: float) -> None:
        counts = self.values.get(labels)
        if counts is None:
            counts = self.values[labels] = [0.0] * (len(self.buckets) + 1)
        counts[bisect.bisect_left(self.buckets, amount)] += 1
        counts[-1] += amount

    def family(self) -> Any:
        """The prometheus_client metric family of the current values."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        if self.kind == "histogram":
            histogram = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
            for labels, counts in self.values.items():
                total, cumulative = 0.0, []
                for bound, count in zip(self.buckets, counts, strict=False):
                    total += count
                    cumulative.append((floatToGoString(bound), total))
                histogram.add_metric(labels, cumulative, counts[-1])
            return histogram
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = kind(self.name, self.doc, labels=self.labels)
        for labels, value in self.values.items():
            read = self.readers.get(labels)
            family.add_metric(labels, float(read()) if read is not None else value)
        return family


class _Collector:
    def __init__(self, families: Iterable[_Family]) -> None:
        self._families = tuple(families)

    def collect(self) -> Iterator[Any]:
        for family in self._families:
            yield family.family()


class Metrics:
    """Every chatbridge metric, with typed methods to update them."""

    def __init__(self, namespace: str = "chatbridge") -> None:
        self._families: list[_Family] = []
        self._registry: CollectorRegistry | None = None

        def metric(kind: str, name: str, doc: str, *labels: str) -> _Family:
            buckets = LATENCY_BUCKETS if kind == "histogram" else None
            family = _Family(kind, f"{namespace}_{name}", doc, labels, buckets)
            self._families.append(family)
            return family

        self.turns = metric(
            "counter", "turns", "Turns finished, by outcome (ok, failed, interrupted, flood...)",
            "bot", "outcome",
        )  # fmt: skip
        self.turn_seconds = metric(
            "histogram", "turn_duration_seconds", "Wall time of a turn, queueing excluded", "bot"
        )
        self.backend_latency_seconds = metric(
            "histogram", "backend_latency_seconds", "Time a backend took to answer one turn",
            "bot", "backend",
        )  # fmt: skip
        self.backend_errors = metric(
            "counter", "backend_errors",
            "Backend failures by kind (validation, auth, unavailable...)", "bot", "kind",
        )  # fmt: skip
        self.messages_sent = metric(
            "counter", "messages_sent", "Platform messages sent", "bot", "platform"
        )
        self.messages_edited = metric(
            "counter", "messages_edited", "Platform message edits (streaming updates)",
            "bot", "platform",
        )  # fmt: skip
        self.rate_limits = metric(
            "counter", "platform_rate_limited", "Platform 429 answers (rate limited)",
            "bot", "platform",
        )  # fmt: skip
        self.refusals = metric(
            "counter", "platform_delivery_refused",
            "Messages a platform refused for good (bot blocked, chat gone)", "bot", "platform",
        )  # fmt: skip
        self.open_sessions = metric("gauge", "open_sessions", "Sessions in the store", "bot")
        self.open_backend_connections = metric(
            "gauge", "backend_connections",
            "Open connections to a backend (WebSocket / Socket.IO)", "backend",
        )  # fmt: skip
        self.queued = metric(
            "gauge", "queued_turns", "Turns waiting behind another turn of their conversation",
            "bot",
        )  # fmt: skip
        # several replicas: every sample carries replica="<name>" (see render)
        self.replica: str | None = None
        self.partitions_owned = metric(
            "gauge", "replica_partitions",
            "Work partitions whose lease this replica holds (several replicas on Redis)",
        )  # fmt: skip
        self.replicas_live = metric(
            "gauge", "replicas_live",
            "Replicas with a current heartbeat in Redis, as this replica sees them",
        )  # fmt: skip
        self.access_refusals = metric(
            "counter", "access_refused",
            "Messages refused by a bot's access control (allowed_* lists)", "bot", "platform",
        )  # fmt: skip
        self.bot_up = metric(
            "gauge", "bot_connected", "1 while a bot is connected to its platform", "bot"
        )

    @property
    def registry(self) -> CollectorRegistry:
        """A prometheus_client registry that reads these metrics (built on first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(_Collector(self._families))
        return self._registry

    @property
    def content_type(self) -> str:
        from prometheus_client import CONTENT_TYPE_LATEST

        return CONTENT_TYPE_LATEST

    # --- engine (core.engine.TurnObserver) ----------------------------------------------------

    def turn_finished(self, bot: str, outcome: str, seconds: float) -> None:
        self.turns.inc((bot, outcome))
        self.turn_seconds.observe((bot,), max(0.0, seconds))

    def backend_error(self, bot: str, kind: str) -> None:
        self.backend_errors.inc((bot, str(kind)))

    def queue_changed(self, bot: str, queued: int) -> None:
        self.queued.set((bot,), queued)

    def sessions_changed(self, bot: str, count: int) -> None:
        self.open_sessions.set((bot,), count)

    # --- backends -----------------------------------------------------------------------------

    def backend_latency(self, bot: str, backend: str, seconds: float) -> None:
        self.backend_latency_seconds.observe((bot, backend), max(0.0, seconds))

    @contextmanager
    def time_backend(self, bot: str, backend: str) -> Iterator[None]:
        """Observe the duration of the ``with`` body (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.backend_latency(bot, backend, time.perf_counter() - start)

    def backend_connections(self, backend: str, count: int) -> None:
        self.open_backend_connections.set((backend,), count)

    def watch_backend_connections(self, backend: str, read: Callable[[], float]) -> None:
        """Read the gauge from ``read()`` at every scrape (e.g. a pool's ``len``)."""
        self.open_backend_connections.read_from((backend,), read)

    def watch_queued_turns(self, bot: str, read: Callable[[], float]) -> None:
        """Read the gauge from ``read()`` at every scrape (e.g. ``lambda: engine.queued_turns``)."""
        self.queued.read_from((bot,), read)

    def watch_replica(
        self, name: str, owned: Callable[[], float], live: Callable[[], float]
    ) -> None:
        """Label every sample with ``replica`` and read the partition gauges at each scrape."""
        self.replica = name
        self.partitions_owned.read_from((), owned)
        self.replicas_live.read_from((), live)

    # --- adapters -----------------------------------------------------------------------------

    def message_sent(self, bot: str, platform: str, count: int = 1) -> None:
        self.messages_sent.inc((bot, platform), count)

    def message_edited(self, bot: str, platform: str, count: int = 1) -> None:
        self.messages_edited.inc((bot, platform), count)

    def rate_limited(self, bot: str, platform: str) -> None:
        self.rate_limits.inc((bot, platform))

    def delivery_refused(self, bot: str, platform: str) -> None:
        self.refusals.inc((bot, platform))

    def access_refused(self, bot: str, platform: str) -> None:
        self.access_refusals.inc((bot, platform))

    def bot_connected(self, bot: str, connected: bool) -> None:
        self.bot_up.set((bot,), 1 if connected else 0)

    # --- exposition ---------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        from prometheus_client import generate_latest

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
