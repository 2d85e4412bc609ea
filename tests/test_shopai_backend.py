"""ShopAI backend against the emulator, over real sockets, for both protocol versions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from backend_contract import BackendContract, collect, inbound, key

from chatbridge.core.backends.shopai import ShopAIBackend, ShopAIMetrics, ShopAISettings
from chatbridge.core.backends.shopai.backend import visible_text
from chatbridge.core.errors import BackendError
from chatbridge.core.protocols import Backend
from chatbridge.core.richtext import Dialect, render
from chatbridge.core.types import (
    Event,
    Failure,
    FailureKind,
    FailureReason,
    Final,
    Snapshot,
    Token,
)
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer

VERSIONS = ["v0.1", "v0.2"]
PHONE = "I need a phone"  # an answer with HTML (<b>, <a href>)
PLAIN = "hello there"  # an answer without products: plain text


def settings(url: str, **overrides: Any) -> ShopAISettings:
    values: dict[str, Any] = {
        "base_url": url,
        "license_key": "test-license",
        "heartbeat_interval": 1.0,
        "connect_timeout": 2.0,
        "request_timeout": 2.0,
        "answer_timeout": 3.0,
        "reconnect_attempts": 4,
        "reconnect_backoff": 0.02,
        "reconnect_backoff_max": 0.1,
        "idle_timeout": 30.0,
    }
    values.update(overrides)
    return ShopAISettings.from_dict(values)


async def start(version: str, **kw: Any) -> ShopAIEmulator:
    """A strict emulator (the default): it times a client out shortly after a missed heartbeat."""
    kw.setdefault("token_delay", 0.001)
    kw.setdefault("heartbeat_interval", 1.0)
    return await start_shopai_emulator(version=version, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=VERSIONS)
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    emulator = await start(request.param)
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def backend(emu: ShopAIEmulator) -> AsyncIterator[ShopAIBackend]:
    b = ShopAIBackend(settings(emu.url), metrics=ShopAIMetrics())
    try:
        yield b
    finally:
        await b.aclose()


def final_of(events: list[Event]) -> Final:
    BackendContract.assert_turn_shape(events)
    assert isinstance(events[-1], Final), events[-1]
    return events[-1]


def failure_of(events: list[Event]) -> Failure:
    BackendContract.assert_turn_shape(events)
    assert isinstance(events[-1], Failure), events[-1]
    return events[-1]


def expected(question: str, language: str = "en") -> str:
    return visible_text(compose_answer(question, language))


async def wait_for(predicate: Any, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


# --- the contract suite, once per protocol version ---------------------------------------------


class _ShopAIContract(BackendContract):
    first_text = PHONE
    second_text = "and a laptop?"
    image_text = "a camera like this one"
    version = "v0.1"

    @pytest.fixture
    async def backend_factory(self) -> AsyncIterator[Backend]:
        emulator = await start(self.version)
        b = ShopAIBackend(settings(emulator.url))
        try:
            yield b
        finally:
            await b.aclose()
            await emulator.stop()


class TestShopAIV01Contract(_ShopAIContract):
    version = "v0.1"


class TestShopAIV02Contract(_ShopAIContract):
    version = "v0.2"


# --- streaming and the authoritative history -----------------------------------------------


async def test_streams_tokens_then_final(emu: ShopAIEmulator, backend: ShopAIBackend) -> None:
    ref = await backend.open(key(), "en")
    events = await collect(backend, ref, inbound(PLAIN))
    final = final_of(events)
    tokens = [e for e in events if isinstance(e, Token)]
    assert len(tokens) > 10, "the answer arrives token by token"
    assert "".join(t.text for t in tokens) == compose_answer(PLAIN)
    assert final.messages[0].text == compose_answer(PLAIN)
    conn = backend.connection(ref)
    assert conn is not None
    assert conn.protocol == ("websocket" if emu.version == "v0.1" else "socketio")


async def test_html_answer_streams_without_tags_and_keeps_links(backend: ShopAIBackend) -> None:
    ref = await backend.open(key(), "en")
    events = await collect(backend, ref, inbound(PHONE))
    final = final_of(events)
    for event in events[:-1]:
        if isinstance(event, Snapshot | Token):
            assert "<" not in (event.text if isinstance(event, Snapshot) else ""), event
    assert any(isinstance(e, Snapshot) for e in events), "markup switches to snapshots"
    message = final.messages[0]
    assert message.text == expected(PHONE)
    bold = Dialect(bold=("<b>", "</b>"))
    assert "<b>Nova Phone 12</b>" in render(message.body, bold)
    assert {link.url for link in message.links} >= {"https://shop.example/p/ph-100"}


async def test_history_overwrites_streamed_text(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    emu.faults.stale_tokens = True
    ref = await backend.open(key(), "en")
    events = await collect(backend, ref, inbound(PLAIN))
    streamed = "".join(e.text for e in events if isinstance(e, Token))
    assert streamed.startswith("A first draft")
    assert final_of(events).messages[0].text == compose_answer(PLAIN)


async def test_follow_up_turns_reuse_the_connection(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    ref = await backend.open(key(), "en")
    first = final_of(await collect(backend, ref, inbound(PHONE)))
    second = final_of(await collect(backend, ref, inbound("a laptop for work")))
    assert first.messages[0].text == expected(PHONE)
    assert second.messages[0].text == expected("a laptop for work")
    assert emu.stats.connections_opened == 1
    # the same question twice: the second answer is the new one, not the first
    again = final_of(await collect(backend, ref, inbound(PHONE)))
    assert again.messages[0].text == expected(PHONE)
    assert len(emu.chats[ref].history) == 6


async def test_unknown_frames_are_ignored(emu: ShopAIEmulator, backend: ShopAIBackend) -> None:
    emu.faults.noise = True
    ref = await backend.open(key(), "en")
    final = final_of(await collect(backend, ref, inbound(PLAIN)))
    assert final.messages[0].text == compose_answer(PLAIN)
    assert backend.metrics.unknown_frames >= 1


# --- status gating and queueing --------------------------------------------------------------


async def test_concurrent_turns_of_one_session_are_queued(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    ref = await backend.open(key(), "en")
    questions = [PHONE, "a laptop for work", "headphones for music"]
    results = await asyncio.gather(*(collect(backend, ref, inbound(q)) for q in questions))
    for question, events in zip(questions, results, strict=True):
        assert final_of(events).messages[0].text == expected(question)
    assert emu.stats.dropped_while_processing == 0
    assert emu.stats.messages == 3


async def test_waits_while_the_server_is_processing(emu: ShopAIEmulator) -> None:
    """Another client makes the session busy: our message waits for ``operational``."""
    emu.token_delay = 0.01
    a = ShopAIBackend(settings(emu.url))
    b = ShopAIBackend(settings(emu.url))
    try:
        ref = await a.open(key(), "en")
        final_of(await collect(a, ref, inbound(PLAIN)))  # a's connection is open and idle
        busy = asyncio.create_task(collect(b, ref, inbound(PHONE)))
        conn = a.connection(ref)
        assert conn is not None
        await wait_for(lambda: conn.status == "processing")
        mine = await collect(a, ref, inbound("a laptop for work"))
        assert final_of(mine).messages[0].text == expected("a laptop for work")
        assert final_of(await busy).messages[0].text == expected(PHONE)
        assert emu.stats.dropped_while_processing == 0
    finally:
        await a.aclose()
        await b.aclose()


# --- heartbeats (v0.1) ------------------------------------------------------------------------


async def test_heartbeats_keep_the_connection_open() -> None:
    emulator = await start("v0.1", heartbeat_timeout=0.6)
    lateness: list[float] = []
    backend = ShopAIBackend(
        settings(emulator.url, heartbeat_interval=0.15),
        metrics=ShopAIMetrics(on_heartbeat=lateness.append),
    )
    try:
        ref = await backend.open(key(), "en")
        final_of(await collect(backend, ref, inbound(PLAIN)))
        await asyncio.sleep(1.5)  # well past the server's 0.6 s heartbeat timeout
        assert emulator.stats.heartbeat_timeouts == 0
        assert emulator.stats.heartbeats >= 7
        assert backend.open_connections == 1
        final_of(await collect(backend, ref, inbound(PHONE)))
        assert emulator.stats.connections_opened == 1
        assert lateness and max(lateness) < 0.3
    finally:
        await backend.aclose()
        await emulator.stop()


async def test_without_heartbeats_the_server_closes_and_the_next_turn_reconnects() -> None:
    emulator = await start("v0.1", heartbeat_timeout=0.3)
    backend = ShopAIBackend(settings(emulator.url, heartbeat_interval=5.0))
    try:
        ref = await backend.open(key(), "en")
        final_of(await collect(backend, ref, inbound(PLAIN)))
        await wait_for(lambda: emulator.stats.heartbeat_timeouts == 1)
        await wait_for(lambda: backend.open_connections == 0)
        final = final_of(await collect(backend, ref, inbound(PHONE)))
        assert final.messages[0].text == expected(PHONE)
        assert emulator.stats.connections_opened == 2
        assert emulator.stats.sessions_created == 1, "same token, no new session"
    finally:
        await backend.aclose()
        await emulator.stop()


# --- faults --------------------------------------------------------------------------------


async def test_drop_mid_stream_recovers_the_full_reply(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    emu.faults.drop_mid_stream = True
    ref = await backend.open(key(), "en")
    events = await collect(backend, ref, inbound(PHONE))
    assert final_of(events).messages[0].text == expected(PHONE)
    assert emu.stats.drops == 1
    assert backend.metrics.reconnects == 1
    # the conversation goes on over the new connection
    next_events = await collect(backend, ref, inbound("a laptop for work"))
    assert final_of(next_events).messages[0].text == expected("a laptop for work")


async def test_error_frame_is_a_plain_failure_then_recovers(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    ref = await backend.open(key(), "en")
    emu.faults.error_frame = True
    failure = failure_of(await collect(backend, ref, inbound(PHONE)))
    assert failure.kind is FailureKind.UNAVAILABLE
    assert failure.reason is FailureReason.NOT_ANSWERED
    emu.faults.error_frame = False
    final = final_of(await collect(backend, ref, inbound(PHONE)))
    assert final.messages[0].text == expected(PHONE)


async def test_slow_tokens_still_deliver(emu: ShopAIEmulator, backend: ShopAIBackend) -> None:
    emu.faults.slow_tokens = True
    emu.faults.slow_token_delay = 0.01
    ref = await backend.open(key(), "en")
    loop = asyncio.get_running_loop()
    began = loop.time()
    final = final_of(await collect(backend, ref, inbound(PLAIN)))
    assert final.messages[0].text == compose_answer(PLAIN)
    assert loop.time() - began > 0.3


async def test_a_stalled_answer_times_out(emu: ShopAIEmulator) -> None:
    emu.faults.slow_tokens = True
    emu.faults.slow_token_delay = 1.0
    backend = ShopAIBackend(settings(emu.url, answer_timeout=0.3))
    try:
        ref = await backend.open(key(), "en")
        failure = failure_of(await collect(backend, ref, inbound(PLAIN)))
        assert failure.kind is FailureKind.TIMEOUT and failure.reason is None
    finally:
        await backend.aclose()


async def test_refused_token_is_session_expired(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    ref = await backend.open(key(), "en")
    final_of(await collect(backend, ref, inbound(PLAIN)))
    await backend.close(ref)  # drop the live connection: the next turn reconnects
    emu.faults.refuse_token = True
    failure = failure_of(await collect(backend, ref, inbound(PHONE)))
    assert failure.kind is FailureKind.SESSION_EXPIRED and failure.retryable
    assert emu.stats.connections_refused == 1
    fresh = await backend.open(key(), "en")  # what the engine does next
    assert final_of(await collect(backend, fresh, inbound(PHONE))).messages[0].text == expected(
        PHONE
    )


async def test_unknown_token_is_session_expired(backend: ShopAIBackend) -> None:
    failure = failure_of(await collect(backend, "not-a-token", inbound(PHONE)))
    assert failure.kind is FailureKind.SESSION_EXPIRED


# --- limits ------------------------------------------------------------------------------


async def test_too_long_message_is_not_sent(emu: ShopAIEmulator, backend: ShopAIBackend) -> None:
    ref = await backend.open(key(), "en")
    failure = failure_of(await collect(backend, ref, inbound("x" * 513)))
    assert failure.kind is FailureKind.VALIDATION
    assert failure.reason is FailureReason.TOO_LONG
    assert failure.fields == {"length": 513, "limit": 512}
    assert emu.stats.messages == 0
    assert final_of(await collect(backend, ref, inbound("y" * 512)))


async def test_server_side_lower_limit_is_reported(version: str = "v0.1") -> None:
    for v in VERSIONS:
        emulator = await start(v, max_message_length=100)
        backend = ShopAIBackend(settings(emulator.url))
        try:
            ref = await backend.open(key(), "en")
            failure = failure_of(await collect(backend, ref, inbound("z" * 150)))
            assert failure.kind is FailureKind.VALIDATION
            assert failure.reason is FailureReason.TOO_LONG
            assert failure.fields == {"length": 150, "limit": 100}
            assert emulator.stats.too_long == 1
            # the session still works afterwards (v0.2 reconnects after the error)
            assert final_of(await collect(backend, ref, inbound(PHONE)))
        finally:
            await backend.aclose()
            await emulator.stop()


# --- session init --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("languages", "user", "default", "chosen"),
    [
        (("en", "hu", "pt"), "pt-BR", "en", "pt"),  # the user's base language
        (("hu", "en"), "pt-BR", "en", "en"),  # fallback: the configured default
        (("hu", "de"), "pt-BR", "en", "hu"),  # fallback: the first listed
        (("hu", "en"), None, "hu", "hu"),  # no user language: the default
    ],
)
async def test_language_mapping_and_fallback(
    languages: tuple[str, ...], user: str | None, default: str, chosen: str
) -> None:
    emulator = await start("v0.1", languages=languages)
    backend = ShopAIBackend(settings(emulator.url, language=default))
    try:
        ref = await backend.open(key(), user)
        assert emulator.chats[ref].language == chosen
        # the supported list is remembered: the next open asks once
        errors = emulator.stats.init_errors
        ref2 = await backend.open(key("u2"), user)
        assert emulator.chats[ref2].language == chosen
        assert emulator.stats.init_errors == errors
    finally:
        await backend.aclose()
        await emulator.stop()


async def test_bad_license_is_one_operator_error(caplog: pytest.LogCaptureFixture) -> None:
    emulator = await start("v0.2", license_key="the-real-key")
    backend = ShopAIBackend(settings(emulator.url, license_key="wrong-secret-key"))
    caplog.set_level(logging.DEBUG)
    try:
        for user in ("a", "b", "c"):
            with pytest.raises(BackendError) as info:
                await backend.open(key(user), "en")
            failure = info.value.failure
            assert failure.kind is FailureKind.AUTH
            assert failure.reason is None and failure.fields == {}  # the kind says it all
            assert "wrong-secret-key" not in str(info.value)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "license" in errors[0].getMessage()
        assert "wrong-secret-key" not in caplog.text
        assert emulator.stats.init_errors == 1, "the refusal is cached, not asked again"
    finally:
        await backend.aclose()
        await emulator.stop()


async def test_unreachable_server_is_unavailable() -> None:
    emulator = await start("v0.1")
    url = emulator.url
    await emulator.stop()
    backend = ShopAIBackend(settings(url, reconnect_attempts=2))
    try:
        with pytest.raises(BackendError) as info:
            await backend.open(key(), "en")
        assert info.value.failure.kind is FailureKind.UNAVAILABLE
        assert info.value.failure.retryable
        assert "test-license" not in str(info.value)
    finally:
        await backend.aclose()


@pytest.mark.parametrize("version", VERSIONS)
async def test_explicit_protocol_skips_the_version_check(version: str) -> None:
    emulator = await start(version)
    protocol = "websocket" if version == "v0.1" else "socketio"
    backend = ShopAIBackend(settings(emulator.url, protocol=protocol))
    try:
        ref = await backend.open(key(), "en")
        assert final_of(await collect(backend, ref, inbound(PHONE)))
        conn = backend.connection(ref)
        assert conn is not None and conn.protocol == protocol
    finally:
        await backend.aclose()
        await emulator.stop()


# --- connection lifecycle --------------------------------------------------------------------


async def test_idle_connection_closes_and_reopens_with_the_same_token(
    emu: ShopAIEmulator,
) -> None:
    backend = ShopAIBackend(settings(emu.url, idle_timeout=0.3))
    try:
        ref = await backend.open(key(), "en")
        final_of(await collect(backend, ref, inbound(PLAIN)))
        assert backend.open_connections == 1
        await wait_for(lambda: backend.open_connections == 0 and emu.stats.open_connections == 0)
        final = final_of(await collect(backend, ref, inbound(PHONE)))
        assert final.messages[0].text == expected(PHONE)
        assert emu.stats.connections_opened == 2
        assert emu.stats.sessions_created == 1
    finally:
        await backend.aclose()


async def test_close_drops_the_connection(emu: ShopAIEmulator, backend: ShopAIBackend) -> None:
    ref = await backend.open(key(), "en")
    final_of(await collect(backend, ref, inbound(PLAIN)))
    await backend.close(ref)
    await wait_for(lambda: emu.stats.open_connections == 0)
    assert backend.open_connections == 0


async def test_closing_the_turn_early_leaves_the_session_usable(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    """The engine stops iterating at the Final and closes the generator; nothing may linger."""
    ref = await backend.open(key(), "en")
    for question in (PHONE, "a laptop for work", PLAIN):
        events = backend.turn(ref, inbound(question))
        async for event in events:
            if isinstance(event, Final):
                assert event.messages[0].text == expected(question)
                break
        await events.aclose()
    assert emu.stats.dropped_while_processing == 0


async def test_answer_lost_with_the_connection_is_asked_again(
    emu: ShopAIEmulator, backend: ShopAIBackend
) -> None:
    emu.faults.drop_mid_stream = True
    emu.faults.lose_answer = True
    ref = await backend.open(key(), "en")
    events = await collect(backend, ref, inbound(PHONE))
    assert final_of(events).messages[0].text == expected(PHONE)
    assert emu.stats.messages == 2, "sent once more after the server lost the answer"
    assert emu.stats.drops == 2  # the fault hits the second try as well, which then completes
