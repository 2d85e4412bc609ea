"""ShopAI through the real clients against strict emulators: one test per defect of issue 11.

Each server here takes a liberty the v0.1 / v0.2 documents leave it (see
chatbridge.emulators.shopai_strict); each test failed against the client before its fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from backend_contract import BackendContract, collect, inbound, key
from test_shopai_backend import PHONE, PLAIN, expected, failure_of, final_of, settings, wait_for

from chatbridge.core.backends.shopai import ShopAIBackend
from chatbridge.core.backends.shopai.backend import visible_text
from chatbridge.core.protocols import Backend
from chatbridge.core.types import FailureKind, FailureReason
from chatbridge.emulators.shopai import ShopAIEmulator, ShopAIStrict, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_entries

VERSIONS = ["v0.1", "v0.2"]
COMPARE = "compare a phone and a laptop"


async def start(version: str, **kw: Any) -> ShopAIEmulator:
    kw.setdefault("token_delay", 0.001)
    kw.setdefault("heartbeat_interval", 1.0)
    return await start_shopai_emulator(version=version, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def running() -> AsyncIterator[list[Any]]:
    """Emulators and backends a test starts; all stopped at the end."""
    things: list[Any] = []
    try:
        yield things
    finally:
        for thing in reversed(things):
            await (thing.aclose() if isinstance(thing, ShopAIBackend) else thing.stop())


async def pair(
    running: list[Any], version: str, emu_kw: dict[str, Any] | None = None, **overrides: Any
) -> tuple[ShopAIEmulator, ShopAIBackend]:
    emulator = await start(version, **(emu_kw or {}))
    running.append(emulator)
    overrides.setdefault("heartbeat_interval", 1.0)
    backend = ShopAIBackend(settings(emulator.url, **overrides))
    running.append(backend)
    return emulator, backend


# --- defect 2: the answer is found by position, and may span several AI entries ---------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_server_that_normalises_stored_text_still_answers(
    running: list[Any], version: str
) -> None:
    emulator, backend = await pair(running, version)
    ref = await backend.open(key(), "en")
    final = final_of(await collect(backend, ref, inbound("  I need   a phone \n")))
    assert final.messages[0].text == expected(PHONE)
    assert emulator.chats[ref].history[0]["content"] == "I need a phone", "stored normalised"
    assert emulator.stats.messages == 1, "answered at once, not resent"
    # and the next turn is found by position too
    final = final_of(await collect(backend, ref, inbound("  hello   there")))
    assert final.messages[0].text == expected(PLAIN)


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_answer_in_several_ai_entries_is_shown_whole(
    running: list[Any], version: str
) -> None:
    emulator, backend = await pair(running, version)
    ref = await backend.open(key(), "en")
    final = final_of(await collect(backend, ref, inbound(COMPARE)))
    entries = compose_entries(COMPARE)
    assert len(entries) > 2
    assert [m.text for m in final.messages] == [visible_text(e) for e in entries]
    assert sum(1 for e in emulator.chats[ref].history if e["type"] == "ai") == len(entries)


@pytest.mark.parametrize("version", VERSIONS)
async def test_after_an_idle_close_the_answer_is_still_found_by_position(
    running: list[Any], version: str
) -> None:
    """The chat is forgotten when idle: the next turn learns its place from the history."""
    emulator, backend = await pair(running, version, idle_timeout=0.2)
    ref = await backend.open(key(), "en")
    final_of(await collect(backend, ref, inbound(COMPARE)))
    await wait_for(lambda: backend.open_connections == 0)
    final = final_of(await collect(backend, ref, inbound("  I need   a phone")))
    assert [m.text for m in final.messages] == [expected(PHONE)]
    assert emulator.stats.messages == 2


# --- defect 3: "auto" ends on a protocol that works -------------------------------------------


@pytest.mark.parametrize("version_path", ["/api/version", None])
async def test_v02_without_a_version_at_slash_version_is_found(
    running: list[Any], version_path: str | None
) -> None:
    emulator, backend = await pair(
        running, "v0.2", {"strict": ShopAIStrict(version_path=version_path)}
    )
    ref = await backend.open(key(), "en")
    assert final_of(await collect(backend, ref, inbound(PHONE))).messages[0].text == expected(PHONE)
    conn = backend.connection(ref)
    assert conn is not None and conn.protocol == "socketio"
    # what worked is kept: the next conversation connects with Socket.IO at once
    other = await backend.open(key("u2"), "en")
    assert final_of(await collect(backend, other, inbound(PLAIN)))
    assert emulator.stats.connections_opened == 2


async def test_a_wrong_guess_is_not_cached(running: list[Any]) -> None:
    """v0.1 reports nothing at /version; a v0.1 server answers, so v0.1 it is, every time."""
    _, backend = await pair(running, "v0.1")
    for user in ("a", "b"):
        ref = await backend.open(key(user), "en")
        assert final_of(await collect(backend, ref, inbound(PLAIN)))
        conn = backend.connection(ref)
        assert conn is not None and conn.protocol == "websocket"


# --- defect 4: get_history carries its documented Array -------------------------------------


async def test_v02_get_history_is_sent_with_its_data(running: list[Any]) -> None:
    emulator, backend = await pair(running, "v0.2")
    ref = await backend.open(key(), "en")
    final_of(await collect(backend, ref, inbound(PLAIN)))
    emulator.faults.drop_before_history = True  # only get_history can recover the answer
    final = final_of(await collect(backend, ref, inbound(PHONE)))
    assert final.messages[0].text == expected(PHONE)
    assert emulator.stats.history_requests >= 1
    assert emulator.stats.history_requests_ignored == 0


# --- defects 5 and 6: heartbeats -----------------------------------------------------------


async def test_a_busy_silent_server_is_not_closed_mid_answer(running: list[Any]) -> None:
    """v0.1 thinking for longer than the silence watchdog, answering no heartbeats meanwhile,
    and dropping the answer if the client leaves: the answer still arrives, on one connection."""
    # the server's own heartbeat timeout has slack here: this test is about the client's
    # silence watchdog (4 intervals = 1.2 s), which a 2 s think outlasts
    emulator, backend = await pair(
        running,
        "v0.1",
        {"heartbeat_interval": 0.3, "heartbeat_timeout": 1.5, "think_delay": 2.0},
        heartbeat_interval=0.3,
        answer_timeout=5.0,
    )
    ref = await backend.open(key(), "en")
    final = final_of(await collect(backend, ref, inbound(PHONE)))
    assert final.messages[0].text == expected(PHONE)
    assert emulator.stats.heartbeats_unanswered >= 3, "the server really kept silent"
    assert emulator.stats.generations_stopped == 0
    assert emulator.stats.connections_opened == 1
    assert emulator.stats.messages == 1


async def test_heartbeats_leave_a_margin_before_the_server_times_out(running: list[Any]) -> None:
    """A server that expects a heartbeat within every interval, counted from its side of the
    connect, with no grace at all: an idle conversation stays connected."""
    emulator, backend = await pair(
        running,
        "v0.1",
        {"heartbeat_interval": 2.0, "heartbeat_timeout": 2.0},
        heartbeat_interval=2.0,
    )
    ref = await backend.open(key(), "en")
    final_of(await collect(backend, ref, inbound(PLAIN)))
    await wait_for(lambda: emulator.stats.heartbeats >= 3, timeout=10.0)
    assert emulator.stats.heartbeat_timeouts == 0
    assert backend.open_connections == 1
    final_of(await collect(backend, ref, inbound(PHONE)))
    assert emulator.stats.connections_opened == 1


# --- defect 9: a v0.2 handshake refused with 401/403 is an expired token -----------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_v02_handshake_refused_with_http_status_is_session_expired(
    running: list[Any], status: int
) -> None:
    emulator, backend = await pair(
        running, "v0.2", {"strict": ShopAIStrict(refuse_with_http=status)}, protocol="socketio"
    )
    ref = await backend.open(key(), "en")
    final_of(await collect(backend, ref, inbound(PLAIN)))
    await backend.close(ref)
    emulator.faults.refuse_token = True
    failure = failure_of(await collect(backend, ref, inbound(PHONE)))
    assert failure.kind is FailureKind.SESSION_EXPIRED and failure.retryable
    assert emulator.stats.connections_refused == 1, "refused once, not retried as an outage"
    fresh = await backend.open(key(), "en")  # what the engine does next
    assert final_of(await collect(backend, fresh, inbound(PHONE)))


# --- the strict servers' other liberties, through the client -----------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_client_that_gives_up_stops_the_generation(
    running: list[Any], version: str
) -> None:
    """The answer timeout closes the connection; the strict server then stops generating,
    and the session answers the next message."""
    emulator, backend = await pair(running, version, {"think_delay": 1.0}, answer_timeout=0.3)
    ref = await backend.open(key(), "en")
    failure = failure_of(await collect(backend, ref, inbound(PHONE)))
    assert failure.kind is FailureKind.TIMEOUT
    await wait_for(lambda: emulator.stats.generations_stopped == 1)
    emulator.think_delay = 0.0
    final = final_of(await collect(backend, ref, inbound(PLAIN)))
    assert final.messages[0].text == expected(PLAIN)


async def test_a_v01_server_that_closes_after_an_error(running: list[Any]) -> None:
    """The v0.1 document's "future versions": an error then a closed connection."""
    strict = ShopAIStrict(close_after_error=True)
    emulator, backend = await pair(running, "v0.1", {"strict": strict, "max_message_length": 100})
    ref = await backend.open(key(), "en")
    failure = failure_of(await collect(backend, ref, inbound("z" * 150)))
    assert failure.kind is FailureKind.VALIDATION
    assert failure.reason is FailureReason.TOO_LONG
    assert failure.fields == {"length": 150, "limit": 100}
    final = final_of(await collect(backend, ref, inbound(PHONE)))
    assert final.messages[0].text == expected(PHONE)
    assert emulator.stats.connections_opened == 2, "reconnected after the close"


# --- the contract suite over the variant servers ---------------------------------------------


class _VariantContract(BackendContract):
    first_text = PHONE
    second_text = "and a laptop?"
    image_text = "a camera like this one"
    version = "v0.2"
    strict = ShopAIStrict()
    heartbeat = 1.0

    @pytest.fixture
    async def backend_factory(self) -> AsyncIterator[Backend]:
        emulator = await start(self.version, strict=self.strict, heartbeat_interval=self.heartbeat)
        b = ShopAIBackend(settings(emulator.url, heartbeat_interval=self.heartbeat))
        try:
            yield b
        finally:
            await b.aclose()
            await emulator.stop()


class TestShopAIV02ElsewhereContract(_VariantContract):
    """v0.2 with its version at another path and tokens refused with HTTP 401."""

    strict = ShopAIStrict(version_path="/api/version", refuse_with_http=401)


class TestShopAIV01TightHeartbeatContract(_VariantContract):
    version = "v0.1"
    strict = ShopAIStrict(heartbeat_grace=0.0, close_after_error=True)
    heartbeat = 2.0  # a quarter of it (0.5 s) is the client's margin


async def test_running_backend_is_usable_concurrently(running: list[Any]) -> None:
    """Several conversations on one strict server at once, each found by position."""
    _, backend = await pair(running, "v0.2")
    refs = [await backend.open(key(f"u{i}"), "en") for i in range(5)]
    results = await asyncio.gather(
        *(collect(backend, ref, inbound(f"  I need a phone  #{i}")) for i, ref in enumerate(refs))
    )
    for events in results:
        assert final_of(events).messages[0].text == expected(PHONE)
