"""Engine promises: ordering per conversation, concurrency across conversations, sessions
created once and reused, failures in plain language, expired sessions renewed, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from engine_doubles import RecordingSurface

from chatbridge.core.engine import Engine
from chatbridge.core.errors import BackendError, NotSupported
from chatbridge.core.locales import en
from chatbridge.core.store import MemoryStore, SQLiteStore
from chatbridge.core.types import (
    ConversationKey,
    Event,
    Failure,
    FailureKind,
    Final,
    Inbound,
    Notice,
    NoticeReason,
    ReplyMessage,
    Token,
)


class ScriptedBackend:
    """Echoes the user's text after ``delay``; scripted faults by message text."""

    name = "scripted"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.expired: set[str] = set()
        self.running: dict[str, int] = {}
        self.max_parallel_per_session = 0
        self.max_parallel = 0
        self._parallel = 0

    async def open(self, key: ConversationKey, language: str | None) -> str:
        if key.user_id == "bad-license":
            raise BackendError(Failure(FailureKind.AUTH, "license refused"))
        ref = f"s{len(self.opened) + 1}"
        self.opened.append(ref)
        return ref

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        self.running[session_ref] = self.running.get(session_ref, 0) + 1
        self._parallel += 1
        self.max_parallel = max(self.max_parallel, self._parallel)
        self.max_parallel_per_session = max(
            self.max_parallel_per_session, self.running[session_ref]
        )
        try:
            text = inbound.effective_text
            if session_ref in self.expired:
                yield Failure(FailureKind.SESSION_EXPIRED, "token refused", retryable=True)
                return
            yield Token(text[:2])
            await asyncio.sleep(self.delay)
            if text == "boom":
                raise RuntimeError("backend bug with secret-ish details")
            if text == "invalid":
                yield Failure(FailureKind.VALIDATION, "message is too long (600 > 512)")
                return
            if text == "silent":
                return
            yield Final((ReplyMessage(f"echo {text} ({session_ref})"),))
        finally:
            self.running[session_ref] -= 1
            self._parallel -= 1

    async def close(self, session_ref: str) -> None:
        self.closed.append(session_ref)

    async def aclose(self) -> None:
        pass


def key(user: str = "u1", chat: str = "c1") -> ConversationKey:
    return ConversationKey(bot="b", platform="test", chat_id=chat, user_id=user)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = await MemoryStore.open()
    yield s
    await s.close()


async def test_messages_sent_during_a_slow_turn_come_out_in_order(store: MemoryStore) -> None:
    backend = ScriptedBackend(delay=0.05)
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=store)
    log: list[str] = []
    futures = [
        engine.submit(Inbound(key=key(), text=f"m{i}"), RecordingSurface(log, f"m{i}"))
        for i in range(5)
    ]
    assert engine.queued_turns == 4
    results = await asyncio.gather(*futures)
    assert [r.outcome for r in results] == ["ok"] * 5
    assert log == [f"m{i}:finish:echo m{i} (s1)" for i in range(5)]
    assert backend.max_parallel_per_session == 1
    assert backend.opened == ["s1"]  # one session, created on first contact, reused
    record = await store.get(key())
    assert record is not None and record.turn_count == 5
    assert engine.queued_turns == 0


async def test_different_conversations_run_concurrently(store: MemoryStore) -> None:
    backend = ScriptedBackend(delay=0.1)
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=store)
    surfaces = [RecordingSurface() for _ in range(4)]
    await asyncio.gather(
        *(
            engine.handle(Inbound(key=key(user=f"u{i}"), text="hi"), s)
            for i, s in enumerate(surfaces)
        )
    )
    assert backend.max_parallel == 4
    assert len(backend.opened) == 4
    assert await engine.count_sessions() == 4


async def test_tokens_stream_before_the_final(store: MemoryStore) -> None:
    engine = Engine(bot="b", backend=ScriptedBackend(), backend_name="ai", store=store)
    surface = RecordingSurface()
    await engine.handle(Inbound(key=key(), text="hello"), surface)
    assert surface.events == [("begin", ""), ("append", "he"), ("finish", "echo hello (s1)")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("boom", "something went wrong"),
        ("invalid", "couldn't accept that message. Please change it"),
        ("silent", "couldn't read"),
    ],
)
async def test_every_failure_ends_in_a_plain_reply(
    store: MemoryStore, text: str, expected: str
) -> None:
    engine = Engine(bot="b", backend=ScriptedBackend(), backend_name="ai", store=store)
    surface = RecordingSurface()
    result = await engine.handle(Inbound(key=key(), text=text), surface)
    assert result.outcome == "failed"
    kind, shown = surface.events[-1]
    assert kind == "fail"
    assert expected in shown
    assert "secret" not in shown and "RuntimeError" not in shown
    assert "600" not in shown, "a failure's log detail is never shown"
    # the lane survives: the next message is answered
    again = RecordingSurface()
    await engine.handle(Inbound(key=key(), text="next"), again)
    assert again.events[-1][0] == "finish"


async def test_auth_failure_on_open_tells_the_user_and_stores_nothing(store: MemoryStore) -> None:
    engine = Engine(bot="b", backend=ScriptedBackend(), backend_name="ai", store=store)
    surface = RecordingSurface()
    result = await engine.handle(Inbound(key=key(user="bad-license"), text="hi"), surface)
    assert result.failure is not None and result.failure.kind is FailureKind.AUTH
    assert "not available" in surface.events[-1][1]
    assert await store.count() == 0


async def test_expired_session_is_renewed_and_the_turn_retried(store: MemoryStore) -> None:
    backend = ScriptedBackend()
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=store)
    await engine.handle(Inbound(key=key(), text="one"), RecordingSurface())
    backend.expired.add("s1")
    surface = RecordingSurface()
    result = await engine.handle(Inbound(key=key(), text="two"), surface)
    assert result.outcome == "ok"
    assert ("notice", engine.texts.restarted) in surface.events
    assert surface.events[-1] == ("finish", "echo two (s2)")
    assert backend.closed == ["s1"]
    record = await store.get(key())
    assert record is not None and record.session_ref == "s2"


async def test_session_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    backend = ScriptedBackend()
    first = await SQLiteStore.open(path)
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=first)
    await engine.handle(Inbound(key=key(), text="before"), RecordingSurface())
    await first.close()

    second = await SQLiteStore.open(path)
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=second)
    surface = RecordingSurface()
    await engine.handle(Inbound(key=key(), text="after"), surface)
    assert surface.events[-1] == ("finish", "echo after (s1)")
    assert backend.opened == ["s1"]
    await second.close()


async def test_reset_is_ordered_after_pending_turns(store: MemoryStore) -> None:
    backend = ScriptedBackend(delay=0.05)
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=store)
    first = engine.submit(Inbound(key=key(), text="a"), RecordingSurface())
    assert await engine.reset(key()) is True  # waited for turn "a", then forgot s1
    assert first.done()
    assert backend.closed == ["s1"]
    surface = RecordingSurface()
    await engine.handle(Inbound(key=key(), text="b"), surface)
    assert surface.events[-1] == ("finish", "echo b (s2)")
    assert await engine.reset(key(user="nobody")) is False


async def test_admin_resets(store: MemoryStore) -> None:
    engine = Engine(bot="b", backend=ScriptedBackend(), backend_name="ai", store=store)
    for user, chat in [("u1", "c1"), ("u1", "c2"), ("u2", "c1")]:
        await engine.handle(Inbound(key=key(user, chat), text="hi"), RecordingSurface())
    assert await engine.reset_user("u1") == 2
    assert [r.key.user_id for r in await engine.list_sessions()] == ["u2"]
    assert await engine.reset_all() == 1
    assert await engine.count_sessions() == 0


async def test_flood_gate_refuses_with_wait_time(store: MemoryStore) -> None:
    class Gate:
        def __init__(self) -> None:
            self.calls = 0

        def check(self, key: ConversationKey) -> float | None:
            self.calls += 1
            return None if self.calls <= 2 else 12.3

    backend = ScriptedBackend()
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=store, flood=Gate())
    surfaces = [RecordingSurface() for _ in range(3)]
    for s in surfaces:
        await engine.handle(Inbound(key=key(), text="x"), s)
    assert surfaces[2].events == [("fail", engine.texts.flood.format(seconds=12))]
    assert (await engine.handle(Inbound(key=key(), text="y"), RecordingSurface())).outcome == (
        "refused"
    )
    assert (await store.get(key())).turn_count == 2  # type: ignore[union-attr]


async def test_shutdown_interrupts_and_tells_users(store: MemoryStore) -> None:
    backend = ScriptedBackend(delay=5)
    engine = Engine(bot="b", backend=backend, backend_name="ai", store=store)
    running, queued = RecordingSurface(), RecordingSurface()
    f1 = engine.submit(Inbound(key=key(), text="slow"), running)
    f2 = engine.submit(Inbound(key=key(), text="queued"), queued)
    f3 = engine.submit(Inbound(key=key("u2", "c2"), text="other"), RecordingSurface())
    await asyncio.sleep(0.05)
    assert engine.queued_turns == 1  # m2 behind m1; the other conversation's turn runs
    await engine.aclose(grace=0.1)
    assert (await f1).outcome == "interrupted" and (await f2).outcome == "interrupted"
    assert (await f3).outcome == "interrupted"
    assert engine.queued_turns == 0
    assert running.events[-1] == ("fail", engine.texts.interrupted)
    assert queued.events == [("fail", engine.texts.interrupted)]
    late = RecordingSurface()
    assert (await engine.handle(Inbound(key=key(), text="late"), late)).outcome == "interrupted"
    assert late.events == [("fail", engine.texts.interrupted)]


async def test_shutdown_lets_short_turns_finish(store: MemoryStore) -> None:
    engine = Engine(bot="b", backend=ScriptedBackend(delay=0.05), backend_name="ai", store=store)
    surface = RecordingSurface()
    future = engine.submit(Inbound(key=key(), text="quick"), surface)
    await engine.aclose(grace=2)
    assert (await future).outcome == "ok"


async def test_notices_and_describe_listing_unsupported(store: MemoryStore) -> None:
    class NoticeBackend(ScriptedBackend):
        async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
            yield Notice(NoticeReason.PHOTOS_DROPPED)
            yield Final((ReplyMessage("done"),))

    engine = Engine(bot="b", backend=NoticeBackend(), backend_name="ai", store=store)
    surface = RecordingSurface()
    await engine.handle(Inbound(key=key(), text="x"), surface)
    assert ("notice", en.TEXTS["photos_dropped"]) in surface.events
    with pytest.raises(NotSupported):
        await engine.describe_listing([], "a chair", None)
