"""Short ids for an answer's buttons, given by the engine when the answer arrives.

Platforms carry a pressed button back as a few bytes (Telegram's callback_data holds 64), so
each payload button gets a short id that the store maps back to its payload. All the ids of
one answer are written in one batch, before any adapter draws the answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from chatbridge.core.protocols import SessionStore
from chatbridge.core.types import Button, ReplyMessage

__all__ = ["with_button_ids"]


def _needs_id(button: Button) -> bool:
    return button.payload is not None and button.id is None


async def with_button_ids(
    store: SessionStore, messages: Sequence[ReplyMessage]
) -> tuple[ReplyMessage, ...]:
    """``messages`` with an id on every payload button (one store batch for all of them)."""
    payloads = [
        b.payload for m in messages for b in m.buttons if b.payload is not None and b.id is None
    ]
    if not payloads:
        return tuple(messages)
    ids: dict[str, str] = dict(zip(payloads, await store.short_ids(payloads), strict=True))

    def named(button: Button) -> Button:
        if button.payload is None or not _needs_id(button):
            return button
        return dataclasses.replace(button, id=ids[button.payload])

    return tuple(
        dataclasses.replace(m, buttons=tuple(named(b) for b in m.buttons)) if m.buttons else m
        for m in messages
    )
