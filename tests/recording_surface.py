"""One recording ``Surface`` for the engine-level tests: every call is kept as (kind, text)."""

from __future__ import annotations

from collections.abc import Sequence

from chatbridge.core.types import ReplyMessage


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
