"""The engine names an answer's buttons when the answer arrives: one store batch per answer,
before any adapter draws it; adapters only carry the ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine_doubles import AnswerBackend

from chatbridge.core.engine import Engine
from chatbridge.core.store import SQLiteStore
from chatbridge.core.types import (
    Button,
    ConversationKey,
    Inbound,
    Link,
    ReplyMessage,
)

ANSWER = (
    ReplyMessage("Qual a capacidade?", (Button("64 GB", payload="64"), Button("128 GB", "128"))),
    ReplyMessage(
        "Ou vê o catálogo.",
        (Button("Catálogo", url="https://c.example"), Button("Outro", payload="64")),
        (Link("Loja", "https://l.example"),),
    ),
)


class CountingStore(SQLiteStore):
    batches: list[list[str]]

    async def short_ids(self, payloads: Sequence[str]) -> list[str]:
        self.batches.append(list(payloads))
        return await super().short_ids(payloads)

    async def short_id(self, payload: str) -> str:
        raise AssertionError("ids are written in one batch, never one by one")


class Drawn:
    def __init__(self) -> None:
        self.messages: Sequence[ReplyMessage] = ()

    async def begin(self) -> None: ...
    async def append(self, text: str) -> None: ...
    async def replace(self, text: str) -> None: ...
    async def notice(self, text: str) -> None: ...
    async def fail(self, text: str) -> None: ...

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        self.messages = messages


async def test_the_engine_names_every_payload_button_in_one_batch(tmp_path: Path) -> None:
    store = await CountingStore.open(tmp_path / "s.db")
    assert isinstance(store, CountingStore)
    store.batches = []
    engine = Engine(bot="b", backend=AnswerBackend(ANSWER), backend_name="answer", store=store)
    try:
        surface = Drawn()
        result = await engine.handle(Inbound(ConversationKey("b", "t", "1", "1"), "hi"), surface)
        assert result.outcome == "ok"
        assert store.batches == [["64", "128", "64"]]
        buttons = [b for m in surface.messages for b in m.buttons]
        assert [b.label for b in buttons] == ["64 GB", "128 GB", "Catálogo", "Outro"]
        first, second, url, again = buttons
        assert url.id is None  # a link needs no id
        assert first.id == again.id != second.id  # one payload, one id
        for button in (first, second):
            assert button.id is not None
            assert await engine.resolve_button(button.id) == button.payload
        # everything else of the answer is as the backend sent it
        assert [m.text for m in surface.messages] == [m.text for m in ANSWER]
        assert surface.messages[1].links == ANSWER[1].links
    finally:
        await engine.aclose(1.0)
        await store.close()
