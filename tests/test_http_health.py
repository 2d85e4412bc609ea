"""HealthServer and Metrics, scraped over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import pytest
from prometheus_text import sample

from chatbridge.bots.http import HealthServer, parse_listen
from chatbridge.core.metrics import Metrics


async def always(checks: Mapping[str, bool]) -> Mapping[str, bool]:
    return checks


async def test_healthz_readyz_metrics_over_http() -> None:
    metrics = Metrics()
    state = {"store": True, "bot:sellers": True}

    async def readiness() -> Mapping[str, bool]:
        return dict(state)

    async with HealthServer("127.0.0.1:0", metrics, readiness) as server:
        assert server.port and server.port > 0
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            r = await client.get("/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}

            r = await client.get("/readyz")
            assert r.status_code == 200
            assert r.json() == {"ready": True, "checks": {"store": True, "bot:sellers": True}}

            state["bot:sellers"] = False
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"] == {"store": True, "bot:sellers": False}
            assert r.json()["ready"] is False

            # Liveness does not depend on readiness.
            assert (await client.get("/healthz")).status_code == 200

            metrics.turn_finished("sellers", "ok", 0.4)
            metrics.turn_finished("sellers", "ok", 3.0)
            metrics.turn_finished("sellers", "failed", 1.0)
            metrics.backend_latency("sellers", "sellers-ai", 0.3)
            metrics.backend_error("sellers", "unavailable")
            metrics.message_sent("sellers", "telegram", 2)
            metrics.message_edited("sellers", "telegram")
            metrics.rate_limited("sellers", "telegram")
            metrics.sessions_changed("sellers", 7)
            metrics.queue_changed("sellers", 2)
            metrics.backend_connections("shop", 3)
            metrics.bot_connected("sellers", True)

            r = await client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            text = r.text
            assert sample(text, "chatbridge_turns_total", bot="sellers", outcome="ok") == 2
            assert sample(text, "chatbridge_turns_total", bot="sellers", outcome="failed") == 1
            assert sample(text, "chatbridge_turn_duration_seconds_count", bot="sellers") == 3
            assert sample(text, "chatbridge_turn_duration_seconds_sum", bot="sellers") == 4.4
            assert (
                sample(
                    text,
                    "chatbridge_backend_latency_seconds_bucket",
                    bot="sellers",
                    backend="sellers-ai",
                    le="0.5",
                )
                == 1
            )
            assert (
                sample(text, "chatbridge_backend_errors_total", bot="sellers", kind="unavailable")
                == 1
            )
            labels = {"bot": "sellers", "platform": "telegram"}
            assert sample(text, "chatbridge_messages_sent_total", **labels) == 2
            assert sample(text, "chatbridge_messages_edited_total", **labels) == 1
            assert sample(text, "chatbridge_platform_rate_limited_total", **labels) == 1
            assert sample(text, "chatbridge_open_sessions", bot="sellers") == 7
            assert sample(text, "chatbridge_queued_turns", bot="sellers") == 2
            assert sample(text, "chatbridge_backend_connections", backend="shop") == 3
            assert sample(text, "chatbridge_bot_connected", bot="sellers") == 1
            assert "_created" not in text

            assert (await client.get("/nope")).status_code == 404


async def test_gauges_read_at_scrape_time_and_on_scrape_hook() -> None:
    metrics = Metrics()
    queue = [0]
    scrapes = [0]

    async def refresh() -> None:
        scrapes[0] += 1
        metrics.sessions_changed("shoppers", 10 * scrapes[0])

    metrics.watch_queued_turns("shoppers", lambda: queue[0])
    metrics.watch_backend_connections("shop", lambda: 4)
    async with (
        HealthServer("127.0.0.1:0", metrics, lambda: always({}), on_scrape=refresh) as server,
        httpx.AsyncClient(base_url=server.url, timeout=5) as client,
    ):
        queue[0] = 5
        text = (await client.get("/metrics")).text
        assert sample(text, "chatbridge_queued_turns", bot="shoppers") == 5
        assert sample(text, "chatbridge_open_sessions", bot="shoppers") == 10
        assert sample(text, "chatbridge_backend_connections", backend="shop") == 4
        queue[0] = 1
        text = (await client.get("/metrics")).text
        assert sample(text, "chatbridge_queued_turns", bot="shoppers") == 1
        assert sample(text, "chatbridge_open_sessions", bot="shoppers") == 20
        # No checks configured: ready.
        assert (await client.get("/readyz")).status_code == 200


async def test_broken_or_slow_checks_mean_not_ready_and_metrics_still_served() -> None:
    metrics = Metrics()
    mode = {"now": "raise"}

    async def readiness() -> Mapping[str, bool]:
        if mode["now"] == "raise":
            raise ConnectionError("store down")
        await asyncio.sleep(5)
        return {"store": True}

    async def failing_refresh() -> None:
        raise RuntimeError("count failed")

    metrics.turn_finished("b", "ok", 0.1)
    server = HealthServer(
        "127.0.0.1:0", metrics, readiness, on_scrape=failing_refresh, check_timeout=0.2
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["error"] == "ConnectionError"
            mode["now"] = "hang"
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.json()["ready"] is False
            r = await client.get("/metrics")
            assert r.status_code == 200
            assert sample(r.text, "chatbridge_turns_total", bot="b", outcome="ok") == 1
    finally:
        await server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"http://127.0.0.1:{server.port}/healthz")
    await server.stop()  # idempotent


def test_metrics_instances_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.turn_finished("x", "ok", 1.0)
    assert a.value("chatbridge_turns_total", bot="x", outcome="ok") == 1
    assert b.value("chatbridge_turns_total", bot="x", outcome="ok") is None


def test_time_backend_observes_even_on_error() -> None:
    m = Metrics()
    with pytest.raises(ValueError), m.time_backend("b", "shop"):
        raise ValueError("boom")
    assert m.value("chatbridge_backend_latency_seconds_count", bot="b", backend="shop") == 1


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen("localhost:80") == ("localhost", 80)
    for bad in ("8080", ":8080", "host:", "host:http", "host:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


async def test_port_in_use_is_reported() -> None:
    metrics = Metrics()
    async with HealthServer("127.0.0.1:0", metrics, lambda: always({})) as first:
        second = HealthServer(f"127.0.0.1:{first.port}", metrics, lambda: always({}))
        with pytest.raises(OSError):
            await second.start()


async def test_standard_readiness_with_a_real_store() -> None:
    from chatbridge.bots.http import standard_readiness
    from chatbridge.core.store import MemoryStore

    store = await MemoryStore.open()
    up = {"sellers": True}

    def broken() -> bool:
        raise RuntimeError("adapter gone")

    check = standard_readiness(store, {"sellers": lambda: up["sellers"], "shoppers": broken})
    assert await check() == {"store": True, "bot:sellers": True, "bot:shoppers": False}
    up["sellers"] = False
    await store.close()
    assert await check() == {"store": False, "bot:sellers": False, "bot:shoppers": False}
    assert await standard_readiness(None, {})() == {}
