"""Albums: several photo messages that share a ``media_group_id``, with no end marker.

The first part of an album takes the album's place in its conversation at once (so a message
sent after the album waits for it) and gathers the other parts until a quiet gap, or until
another message of the chat arrives; every part returns once the whole album is taken, so
neither the poller's offset nor the webhook's 200 moves past a part before it is written down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telegram import Message

Take = Callable[[Message, Callable[[], Awaitable[list[Message]]]], Awaitable[None]]


@dataclass
class _Album:
    messages: list[Message]
    quiet: asyncio.Event = field(default_factory=asyncio.Event)  # another part arrived
    complete: asyncio.Event = field(default_factory=asyncio.Event)  # a later message came
    taken: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class Albums:
    def __init__(self, wait: float) -> None:
        self._wait = wait  # seconds of quiet that end an album
        self._gathering: dict[tuple[int, str], _Album] = {}

    async def part(self, msg: Message, take: Take) -> None:
        """Handle one part; ``take(first_part, gathered)`` is called for the first one."""
        group = (msg.chat.id, str(msg.media_group_id))
        album = self._gathering.get(group)
        if album is not None:
            album.messages.append(msg)
            album.quiet.set()
            await asyncio.shield(album.taken)
            return
        album = self._gathering[group] = _Album(messages=[msg])

        async def gathered() -> list[Message]:
            try:
                while not album.complete.is_set():
                    album.quiet.clear()
                    try:
                        async with asyncio.timeout(self._wait):
                            await _first(album.quiet, album.complete)
                    except TimeoutError:
                        break
            finally:
                self._gathering.pop(group, None)
            return album.messages

        try:
            await take(msg, gathered)
        finally:
            album.taken.set_result(None)

    def end_in_chat(self, chat_id: int, except_group: str | None = None) -> None:
        """A new message of the chat ends its albums still gathering."""
        for (chat, group), album in self._gathering.items():
            if chat == chat_id and group != except_group:
                album.complete.set()

    def end_all(self) -> None:
        for album in self._gathering.values():
            album.complete.set()
