"""One reply drawn in a Discord channel: typing, a streamed message, components at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord

from adapters.discord_adapter.components import build_view
from adapters.discord_adapter.render import MAX_CONTENT, message_markdown, split_markdown
from core.streaming import RateLimited, ThrottledStream
from core.types import ReplyMessage

__all__ = ["ChannelSink", "DiscordSurface"]

log = logging.getLogger(__name__)

# Backend text must never ping @everyone, roles or users.
NO_MENTIONS = discord.AllowedMentions.none()


class ChannelSink:
    """:class:`core.streaming.MessageSink` over a Discord channel (handles are Messages)."""

    def __init__(
        self, channel: discord.abc.Messageable, reply_to: discord.Message | None = None
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to

    async def send(self, text: str, view: discord.ui.View | None = None) -> discord.Message:
        kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
        if view is not None:
            kwargs["view"] = view
        if self._reply_to is not None:
            # the first message of the answer replies to the user's (busy channels stay legible)
            kwargs["reference"] = self._reply_to.to_reference(fail_if_not_exists=False)
            self._reply_to = None
        try:
            return await self._channel.send(text or None, **kwargs)
        except discord.RateLimited as exc:  # only past discord.py's own max_ratelimit_timeout
            raise RateLimited(exc.retry_after) from exc

    async def edit(self, handle: discord.Message, text: str) -> None:
        try:
            await handle.edit(content=text, allowed_mentions=NO_MENTIONS)
        except discord.RateLimited as exc:
            raise RateLimited(exc.retry_after) from exc


class DiscordSurface:
    """:class:`core.protocols.Surface` for one turn in one channel (or thread, or DM)."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        user_id: int,
        short_id: Callable[[str], Awaitable[str]],
        interval: float,
        reply_to: discord.Message | None = None,
    ) -> None:
        self._channel = channel
        self._user_id = user_id
        self._short_id = short_id
        self._sink = ChannelSink(channel, reply_to)
        self._stream: ThrottledStream[discord.Message] = ThrottledStream(
            self._sink, interval=interval, max_len=MAX_CONTENT, split=split_markdown
        )
        self._typing: asyncio.Task[None] | None = None
        self.sent: list[discord.Message] = []  # every message of this reply, for tests/logs

    # --- typing indicator: shown from begin() until the first text ---------------------------

    async def begin(self) -> None:
        if self._typing is None:
            self._typing = asyncio.create_task(self._keep_typing(), name="discord-typing")

    async def _keep_typing(self) -> None:
        try:
            async with self._channel.typing():
                await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            raise
        except Exception:  # a typing indicator is cosmetic: never fail a turn over it
            log.debug("typing indicator failed", exc_info=True)

    async def _stop_typing(self) -> None:
        if self._typing is not None:
            self._typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._typing
            self._typing = None

    # --- streaming ---------------------------------------------------------------------------

    async def append(self, text: str) -> None:
        await self._stop_typing()
        await self._stream.append(text)

    async def replace(self, text: str) -> None:
        await self._stop_typing()
        await self._stream.replace(text)

    async def notice(self, text: str) -> None:
        for piece in split_markdown(text):
            self.sent.append(await self._sink.send(piece))

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        await self._stop_typing()
        for index, message in enumerate(messages):
            text = message_markdown(message)
            view, overflow = await build_view(
                message.buttons, message.links, self._user_id, self._short_id
            )
            if overflow:
                text = "\n".join([text, *(f"- {label}" for label in overflow)]).strip()
            if index == 0 and self._stream.handles:
                await self._finish_stream(text, view)
            else:
                await self._send_new(text, view)

    async def _finish_stream(self, text: str, view: discord.ui.View | None) -> None:
        handles = await self._stream.finish(text)
        needed = len([p for p in split_markdown(text) if p.strip()]) if text.strip() else 0
        # the final answer may be shorter than what was streamed: drop the surplus messages
        for extra in handles[max(needed, 1) :]:
            with contextlib.suppress(discord.HTTPException):
                await extra.delete()
        handles = handles[: max(needed, 1)]
        self.sent.extend(handles)
        if view is not None:
            # one extra edit carries the components; the text is not sent again
            await handles[-1].edit(view=view)

    async def _send_new(self, text: str, view: discord.ui.View | None) -> None:
        await self._stream.abort()
        pieces = [p for p in split_markdown(text) if p.strip()] if text.strip() else []
        if not pieces and view is None:
            return
        if not pieces:
            pieces = [""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            self.sent.append(await self._sink.send(piece, view if last else None))

    async def fail(self, text: str) -> None:
        await self._stop_typing()
        await self._stream.abort()  # what was streamed stays; the failure follows it
        for piece in split_markdown(text):
            self.sent.append(await self._sink.send(piece))
