"""A private chat's first text, under load: "typing..." is not sent once text is on its way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatbridge.adapters.telegram import surface as surface_module
from chatbridge.adapters.telegram.api import Target, TelegramOps
from chatbridge.adapters.telegram.surface import TelegramReply


class SlowOps:
    """Bot API calls where the first draft is stuck in the request queue until released."""

    pacer = None
    drafts = None
    deadline = 5.0

    def __init__(self, refuse_drafts: bool = False) -> None:
        self.released = asyncio.Event()
        self.typing_calls = 0
        self.drafts_sent: list[str] = []
        self.refuse_drafts = refuse_drafts

    async def typing(self, target: Target) -> None:
        self.typing_calls += 1

    async def draft(self, target: Target, draft_id: int, text: str, **kw: Any) -> None:
        if self.refuse_drafts:
            from telegram.error import BadRequest

            raise BadRequest("TEXTDRAFT_PEER_INVALID")
        await self.released.wait()
        self.drafts_sent.append(text)

    async def send(self, target: Target, text: str, markup: Any = None, **kw: Any) -> int:
        await self.released.wait()
        return 1


def reply(ops: SlowOps) -> TelegramReply:
    ops_typed: TelegramOps = ops  # type: ignore[assignment]
    return TelegramReply(
        ops_typed, Target(42, private=True), interval=1.0, use_drafts=True, choose_hint="?"
    )


@pytest.mark.parametrize("refused", [False, True])
async def test_typing_only_when_no_draft_is_on_its_way(
    monkeypatch: pytest.MonkeyPatch, refused: bool
) -> None:
    monkeypatch.setattr(surface_module, "TYPING_GRACE", 0.01)
    ops = SlowOps(refuse_drafts=refused)
    surface = reply(ops)
    await surface.begin()
    await surface.append("Hello")  # the first token: its draft waits for a request slot
    for _ in range(50):  # well past the grace, the timer has fired
        await asyncio.sleep(0.01)
    # a draft goes ahead of any chat action: "typing..." would only come after it; where
    # drafts are refused the first text is a message that may wait, so typing shows
    assert (ops.typing_calls > 0) is refused
    ops.released.set()
    await surface.close()
