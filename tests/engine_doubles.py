"""Test doubles for engine-level tests and benchmarks: a ``Surface`` that records every call as
(kind, text), and a ``Backend`` that answers every message with the same reply at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from chatbridge.core.types import ConversationKey, Event, Final, Inbound, ReplyMessage


class RecordingSurface:
    def __init__(self, log: list[str] | None = None, tag: str = "") -> None:
        self.events: list[tuple[str, str]] = []
        self.log = log
        self.tag = tag

    def _add(self, kind: str, text: str = "") -> None:
        self.events.append((kind, text))
        if self.log is not None and kind in {"finish", "fail"}:
            self.log.append(f"{self.tag}:{kind}:{text}")

    async def begin(self) -> None:
        self._add("begin")

    async def append(self, text: str) -> None:
        self._add("append", text)

    async def replace(self, text: str) -> None:
        self._add("replace", text)

    async def notice(self, text: str) -> None:
        self._add("notice", text)

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        self._add("finish", "|".join(m.text for m in messages))

    async def fail(self, text: str) -> None:
        self._add("fail", text)

    def of(self, kind: str) -> list[str]:
        """The texts of every event of one kind, in order."""
        return [text for k, text in self.events if k == kind]


class AnswerBackend:
    """A backend that answers every message with ``answer`` at once (one session per chat)."""

    def __init__(self, answer: Sequence[ReplyMessage], name: str = "answer") -> None:
        self.answer = tuple(answer)
        self.name = name

    async def open(self, key: ConversationKey, language: str | None) -> str:
        return f"s-{key.chat_id}"

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        yield Final(self.answer)

    async def close(self, session_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None
