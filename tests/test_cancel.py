"""/cancel: the user stops the answer being generated; their next message starts normally."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatbridge.core.engine import Engine
from chatbridge.core.locales import pt_pt
from chatbridge.core.store import MemoryStore
from chatbridge.core.types import ConversationKey, Event, Final, Inbound, ReplyMessage, Token
from tests.fakes.telegram_harness import Harness, ScriptBackend, answer
from tests.test_engine import RecordingSurface

KEY = ConversationKey("b", "test", "c1", "u1")


class SlowBackend:
    """Streams a long answer slowly; the second message of a conversation is quick."""

    name = "slow"

    def __init__(self) -> None:
        self.turns: list[str] = []
        self.stopped = asyncio.Event()

    async def open(self, key: ConversationKey, language: str | None) -> str:
        return "s1"

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        self.turns.append(inbound.text)
        if inbound.text == "long":
            try:
                for i in range(1000):
                    yield Token(f"word{i} ")
                    await asyncio.sleep(0.01)
            finally:
                self.stopped.set()  # the engine stopped waiting and dropped the rest
        yield Final((ReplyMessage(f"answer to {inbound.text}"),))

    async def close(self, session_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_cancel_stops_the_answer_and_the_next_message_starts_normally() -> None:
    store = await MemoryStore.open()
    backend = SlowBackend()
    engine = Engine(bot="b", backend=backend, backend_name="slow", store=store)
    try:
        assert not await engine.cancel(KEY)  # nothing running
        first, second = RecordingSurface(), RecordingSurface()
        running = engine.submit(Inbound(KEY, text="long", language="pt-PT"), first)
        queued = engine.submit(Inbound(KEY, text="next", language="pt-PT"), second)
        while not any(kind == "append" for kind, _ in first.events):
            await asyncio.sleep(0.01)
        assert await engine.cancel(KEY)
        result = await running
        assert result.outcome == "cancelled"
        assert first.events[-1] == ("fail", pt_pt.TEXTS["cancelled"])
        assert backend.stopped.is_set()
        assert (await queued).outcome == "ok"
        assert second.events[-1] == ("finish", "answer to next")
        third = RecordingSurface()
        assert (await engine.handle(Inbound(KEY, text="again"), third)).outcome == "ok"
        assert not await engine.cancel(KEY)
    finally:
        await engine.aclose(1.0)
        await store.close()


async def test_telegram_cancel_stops_the_answer_and_the_next_message_is_answered() -> None:
    backend = ScriptBackend(answer("word " * 400, tokens=400), token_delay=0.02)
    async with Harness(backend) as h:
        user = h.user(100)
        chat = h.fb.private_chat(user)
        await h.fb.push_text(chat, user, "tell me everything")
        await h.fake.wait_for(
            lambda c: c.chat_id == chat["id"] and c.method != "sendChatAction", timeout=8
        )
        await h.fb.push_text(chat, user, "/cancel")
        await h.fake.wait_for(
            lambda c: c.chat_id == chat["id"] and "Stopped." in str(c.params.get("text", "")),
            timeout=8,
        )
        await h.settled(1)
        backend.reply = answer("short one")
        since = len(h.fake.calls)
        await h.fb.push_text(chat, user, "and now?")
        await h.reply_in(chat["id"], since=since, contains="short one")
        await h.fb.push_text(chat, user, "/cancel")
        await h.reply_in(chat["id"], contains="no answer being prepared")
