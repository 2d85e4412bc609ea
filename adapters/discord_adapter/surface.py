"""One reply drawn in a Discord channel: typing, a streamed message, components at the end.

Every REST call waits for the bot's shared budget (:class:`core.pacer.Pacer`, applied inside
discord.py's HTTP session by :mod:`.tracing`): the stream asks for urgent permits for its first
message and the final answer and streaming ones for edits in between, typing indicators for
streaming ones too. Discord errors become the engine's terms: a channel the bot cannot write
to (gone, no access, DMs closed) -> :class:`DeliveryRefused`; 5xx and network errors ->
:class:`PlatformUnavailable`, retried until the delivery deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
import discord

from chatbridge.adapters.discord_adapter.components import build_view
from chatbridge.adapters.discord_adapter.render import MAX_CONTENT, message_markdown, split_markdown
from chatbridge.core.errors import DeliveryRefused, PlatformUnavailable, RateLimited
from chatbridge.core.pacer import STREAM, Pacer
from chatbridge.core.retry import DEFAULT_DELIVERY_DEADLINE, deliver
from chatbridge.core.streaming import ThrottledStream
from chatbridge.core.types import ReplyMessage

__all__ = ["ChannelSink", "DiscordSurface"]

log = logging.getLogger(__name__)

T = TypeVar("T")
TYPING_EVERY = 8.0
TYPING_GRACE = 0.4  # seconds without visible text before "typing..." is shown
# Discord error codes that mean the bot cannot write there, now or later: unknown channel,
# missing access, cannot send messages to this user, missing permissions
_REFUSALS = {10003, 50001, 50007, 50013}
UNKNOWN_MESSAGE = 10008

# Backend text must never ping @everyone, roles or users.
NO_MENTIONS = discord.AllowedMentions.none()


class _Call:
    """One platform call; ``abandoned`` when its caller was cancelled while it ran."""

    __slots__ = ("abandoned",)

    def __init__(self) -> None:
        self.abandoned = False


class ChannelSink:
    """:class:`core.streaming.MessageSink` over a Discord channel (handles are Messages).

    Calls run one at a time, in order, and are never cancelled half-way: the streaming helper
    cancels its preview task when the answer ends, and a discord.py request cancelled in
    flight both loses the message it created and can leave discord.py's rate-limit bucket for
    the channel locked (the next request then waits 30 s). So each call runs in a shielded
    task; a message sent by a call whose caller gave up is kept and reused by the next send.
    """

    def __init__(
        self, channel: discord.abc.Messageable, reply_to: discord.Message | None = None
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to
        self._lock = asyncio.Lock()
        self._orphans: list[discord.Message] = []  # sent, but the caller never got them
        self._moved: dict[int, discord.Message] = {}  # deleted message id -> its replacement
        # components to send along with the first call that writes this text (the answer's
        # last piece), which saves an edit per answer
        self._view_for: tuple[str, discord.ui.View] | None = None

    def attach_view(self, text: str, view: discord.ui.View) -> None:
        self._view_for = (text, view)

    def take_view(self, text: str | None = None) -> discord.ui.View | None:
        """The pending view (if ``text`` is None or is the text it waits for); clears it."""
        if self._view_for is None or (text is not None and self._view_for[0] != text):
            return None
        view, self._view_for = self._view_for[1], None
        return view

    async def _serial(
        self,
        op: Callable[[], Awaitable[T]],
        on_abandoned: Callable[[T], None] | None = None,
    ) -> T:
        call = _Call()

        async def run() -> T:
            async with self._lock:
                result = await op()
                if call.abandoned and on_abandoned is not None:
                    on_abandoned(result)
                return result

        task = asyncio.ensure_future(run())
        task.add_done_callback(_consume_exception)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                call.abandoned = True
            elif not task.cancelled() and task.exception() is None and on_abandoned:
                on_abandoned(task.result())
            raise
        except discord.RateLimited as exc:  # only past discord.py's max_ratelimit_timeout
            raise RateLimited(exc.retry_after) from exc
        except discord.HTTPException as exc:
            if exc.status == 429:  # discord.py gave up retrying it: the stream waits and retries
                raise RateLimited(1.0) from exc
            if exc.code in _REFUSALS or isinstance(exc, discord.Forbidden):
                raise DeliveryRefused(f"{exc.status} {exc.code}: {exc.text}") from exc
            if exc.status >= 500:
                raise PlatformUnavailable(f"{exc.status}") from exc
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PlatformUnavailable(type(exc).__name__) from exc

    async def send(
        self, text: str, view: discord.ui.View | None = None, *, adopt: bool = True
    ) -> discord.Message:
        async def op() -> discord.Message:
            nonlocal view
            if view is None and adopt:
                view = self.take_view(text)
            if adopt and self._orphans:
                # a message an abandoned call created: reuse it rather than post a duplicate
                orphan = self._orphans.pop(0)
                if orphan.content == text and view is None:
                    return orphan
                return await orphan.edit(
                    content=text or None, view=view, allowed_mentions=NO_MENTIONS
                )
            kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
            if view is not None:
                kwargs["view"] = view
            if self._reply_to is not None:
                # the answer's first message replies to the user's (busy channels stay legible)
                kwargs["reference"] = self._reply_to.to_reference(fail_if_not_exists=False)
            message = await self._channel.send(text or None, **kwargs)
            self._reply_to = None
            return message

        return await self._serial(op, self._orphans.append)

    def current(self, handle: discord.Message) -> discord.Message:
        """The message that now stands for ``handle`` (a new one if it was deleted)."""
        return self._moved.get(handle.id, handle)

    async def edit(self, handle: discord.Message, text: str) -> None:
        async def op() -> None:
            view = self.take_view(text)
            kwargs: dict[str, Any] = {"allowed_mentions": NO_MENTIONS}
            if view is not None:
                kwargs["view"] = view
            try:
                await self.current(handle).edit(content=text, **kwargs)
            except discord.NotFound as exc:
                if exc.code != UNKNOWN_MESSAGE:
                    raise
                # deleted while the answer streamed: the text goes on in a new message
                self._moved[handle.id] = await self._channel.send(text, **kwargs)
            except BaseException:
                if view is not None:
                    self.attach_view(text, view)  # not shown: the next call may carry it
                raise

        await self._serial(op)

    async def set_view(self, handle: discord.Message, view: discord.ui.View) -> None:
        """Attach components without sending the text again."""

        async def op() -> None:
            await handle.edit(view=view)

        await self._serial(op)

    async def delete(self, handle: discord.Message) -> None:
        async def op() -> None:
            with contextlib.suppress(discord.HTTPException):
                await handle.delete()

        await self._serial(op)

    async def drop_orphans(self) -> None:
        """Delete messages created by abandoned calls that nothing reused."""
        async with self._lock:
            orphans, self._orphans = self._orphans, []
        for orphan in orphans:
            await self.delete(orphan)


def _consume_exception(task: asyncio.Future[Any]) -> None:
    # an abandoned call's failure has nobody to tell; don't let asyncio warn about it
    if not task.cancelled():
        task.exception()


class DiscordSurface:
    """:class:`core.protocols.Surface` for one turn in one channel (or thread, or DM)."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        user_id: int,
        interval: float,
        reply_to: discord.Message | None = None,
        pacer: Pacer | None = None,
        deadline: float = DEFAULT_DELIVERY_DEADLINE,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._channel = channel
        self._user_id = user_id
        self._pacer = pacer
        self._deadline = deadline
        self._on_refused = on_refused
        self._sink = ChannelSink(channel, reply_to)
        self._stream: ThrottledStream[discord.Message] = ThrottledStream(
            self._sink,
            interval=interval,
            max_len=MAX_CONTENT,
            split=split_markdown,
            pacer=pacer,
            deadline=deadline,
        )
        self._typing: asyncio.Task[None] | None = None
        self.sent: list[discord.Message] = []  # every message of this reply, for tests/logs

    # --- typing indicator: shown from begin() until the first text ---------------------------

    async def begin(self) -> None:
        if self._typing is None:
            self._typing = asyncio.create_task(self._keep_typing(), name="discord-typing")

    async def _keep_typing(self) -> None:
        # Each trigger shows "typing…" for about 10 s, until the first message shows (under
        # pressure it may wait its turn in the bot's budget); an answer that starts at once
        # needs none, which saves a request per turn exactly when many start together. The
        # request runs shielded: cancelling a discord.py request in flight can lock its
        # rate-limit bucket (see ChannelSink).
        await asyncio.sleep(TYPING_GRACE)
        while not self._stream.handles:
            trigger = asyncio.ensure_future(self._trigger_typing())
            trigger.add_done_callback(_consume_exception)
            await asyncio.shield(trigger)
            await asyncio.sleep(TYPING_EVERY)

    async def _trigger_typing(self) -> None:
        try:
            if self._pacer is None:
                await self._channel.typing()
            else:  # cosmetic: answers go first
                async with self._pacer.permit(None, STREAM):
                    await self._channel.typing()
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
        await self._stream.append(text)  # "typing…" ends once the first message shows

    async def replace(self, text: str) -> None:
        await self._stream.replace(text)

    async def _say(self, text: str) -> None:
        """Post ``text`` as new messages, retried until delivered (or refused for good)."""
        for piece in split_markdown(text):

            async def send(piece: str = piece) -> discord.Message:
                return await self._sink.send(piece, adopt=False)

            self.sent.append(await deliver(send, what="a message", deadline=self._deadline))

    async def notice(self, text: str) -> None:
        await self._say(text)

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        try:
            await self._finish(messages)
        except DeliveryRefused as exc:
            log.warning("discord refused delivery for good: %s", exc)
            if self._on_refused is not None:
                self._on_refused()
            raise
        finally:
            await self._stop_typing()

    async def _finish(self, messages: Sequence[ReplyMessage]) -> None:
        for index, message in enumerate(messages):
            text = message_markdown(message)
            view, overflow = build_view(message.buttons, message.links, self._user_id)
            if overflow:
                text = "\n".join([text, *(f"- {label}" for label in overflow)]).strip()
            # Text was streamed (its first post may still be in flight): the stream finishes
            # the answer in the messages it posts, rather than a second copy below them.
            if index == 0 and self._stream.text.strip():
                await self._finish_stream(text, view)
            else:
                await self._send_new(text, view)

    async def _finish_stream(self, text: str, view: discord.ui.View | None) -> None:
        pieces = [p for p in split_markdown(text) if p.strip()] if text.strip() else []
        if view is not None and pieces:
            self._sink.attach_view(pieces[-1], view)  # rides on the last piece's final write
        handles = [self._sink.current(h) for h in await self._stream.finish(text)]
        needed = len(pieces)
        # the final answer may be shorter than what was streamed: drop the surplus messages
        for extra in handles[max(needed, 1) :]:
            await self._sink.delete(extra)
        await self._sink.drop_orphans()
        handles = handles[: max(needed, 1)]
        self.sent.extend(handles)
        if view is not None and (pieces == [] or self._sink.take_view() is not None):
            # the last piece was already on screen: one edit adds the components alone
            await self._sink.set_view(handles[-1], view)

    async def _send_new(self, text: str, view: discord.ui.View | None) -> None:
        await self._stream.abort()
        pieces = [p for p in split_markdown(text) if p.strip()] if text.strip() else []
        if not pieces and view is None:
            return
        if not pieces:
            pieces = [""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1

            async def send(piece: str = piece, last: bool = last) -> discord.Message:
                return await self._sink.send(piece, view if last else None)

            self.sent.append(await deliver(send, what="a message", deadline=self._deadline))
        await self._sink.drop_orphans()

    async def fail(self, text: str) -> None:
        await self._stop_typing()
        try:
            await self._stream.abort()  # what was streamed stays; the failure follows it
            await self._say(text)
        except DeliveryRefused:
            raise  # refused for good (bot blocked, channel gone): the journal records it
        except Exception as exc:  # nothing else can reach the user: log it, never raise
            log.error("could not tell a channel that a turn failed: %s", type(exc).__name__)
