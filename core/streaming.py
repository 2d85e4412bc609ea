"""Throttled streaming: the one helper every adapter uses to show tokens as they arrive.

Platforms punish fast edits (Telegram: about one per second per chat, long bans when ignored;
Discord: about five per five seconds per channel), so a stream of tokens must become a few
coalesced edits. Adapters supply the platform operations (:class:`MessageSink`) and their
limits; this module owns the timer, coalescing, splitting and 429 handling.

With a :class:`core.pacer.Pacer`, each platform call first waits for a permit of the bot's
shared budget, and only then decides what to write: a call that waited writes the latest text,
so under pressure a stream becomes fewer, larger edits and loses nothing. The first message
and the final answer ask for urgent permits, edits in between for streaming ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Generic, Protocol, TypeVar

from chatbridge.core.errors import PlatformUnavailable, RateLimited
from chatbridge.core.pacer import STREAM, URGENT, Lane, Pacer
from chatbridge.core.retry import DEFAULT_DELIVERY_DEADLINE, deliver
from chatbridge.core.textsplit import split_text, utf16_len

__all__ = [
    "MessageSink",
    "PlatformUnavailable",
    "RateLimited",
    "ThrottledStream",
    "split_text",
    "utf16_len",
]

log = logging.getLogger(__name__)

H = TypeVar("H")


class MessageSink(Protocol[H]):
    async def send(self, text: str) -> H:
        """Post a new message and return a handle for later edits."""
        ...

    async def edit(self, handle: H, text: str) -> None:
        """Replace the text of a message posted by :meth:`send`."""
        ...


class ThrottledStream(Generic[H]):
    """Shows a growing text through a sink, at most one platform call per ``interval``.

    The first text is sent at once (so the user sees something quickly); later changes are
    coalesced and written when the interval has passed. Text past ``max_len`` continues in a
    new message. ``finish`` delivers the final text, waiting out rate limits and outages for
    up to ``deadline`` seconds; a permanent refusal raised by the sink goes straight up.
    """

    def __init__(
        self,
        sink: MessageSink[H],
        *,
        interval: float = 1.0,
        max_len: int = 4096,
        length: Callable[[str], int] = len,
        split: Callable[[str, int], list[str]] | None = None,
        pacer: Pacer | None = None,
        lane: Lane | None = None,
        deadline: float = DEFAULT_DELIVERY_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._max_len = max_len
        self._length = length
        self._split = split or (lambda text, n: split_text(text, n, length))
        self._pacer = pacer
        self._lane = lane
        self._deadline = deadline
        self._clock = clock
        self._text = ""
        self._split_text: str | None = None  # the text _split_pieces were cut from
        self._split_pieces: list[str] = []
        self._handles: list[H] = []
        self._shown: list[str] = []
        self._next_allowed = 0.0
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._waiting: int | None = None  # priority of the permit the preview waits for
        self._in_call = False
        self.rate_limited = 0  # 429s seen, for metrics and benchmarks
        self.calls = 0  # platform calls made

    @property
    def text(self) -> str:
        return self._text

    @property
    def handles(self) -> list[H]:
        return list(self._handles)

    async def append(self, text: str) -> None:
        if text:
            self._text += text
            self._kick()

    async def replace(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self._kick()

    def _kick(self) -> None:
        if self._closed:
            return
        self._dirty.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="throttled-stream")

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            if self._closed:
                return
            self._dirty.clear()
            delay = self._next_allowed - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)  # coalesce everything that arrives meanwhile
            if self._closed:
                return
            try:
                more = await self._step(final=False)
            except RateLimited as exc:
                self.rate_limited += 1
                self._next_allowed = self._clock() + exc.retry_after
                more = True
            except Exception:  # the platform refused one preview; finish() will try again
                log.warning("stream preview update failed", exc_info=True)
                self._next_allowed = self._clock() + self._interval
                more = False
            if more:
                self._dirty.set()

    def _pieces(self) -> list[str]:
        # asked several times per platform call: cut once per text (splitting measures the
        # whole text, markup stripped, each time)
        text = self._text
        if text is not self._split_text:
            pieces = (
                [p for p in self._split(text, self._max_len) if p.strip()] if text.strip() else []
            )
            self._split_text, self._split_pieces = text, pieces
        return self._split_pieces

    def _next_write(self, pieces: list[str]) -> int | None:
        """The index of the first piece that is not shown as it should be."""
        for i, piece in enumerate(pieces):
            if i >= len(self._handles) or self._shown[i] != piece:
                return i
        return None

    @contextlib.asynccontextmanager
    async def _permit(self, priority: int) -> AsyncIterator[None]:
        if self._pacer is None:
            yield
            return
        self._waiting = priority
        try:
            async with self._pacer.permit(self._lane, priority, lend=True):
                self._waiting = None
                yield
        finally:
            self._waiting = None

    async def _step(self, final: bool) -> bool:
        """Make at most one platform call towards showing the current text.

        Returns True when more calls are needed to catch up.
        """
        if self._next_write(self._pieces()) is None:
            return False
        priority = URGENT if final or not self._handles else STREAM
        async with self._permit(priority), self._lock:
            self._in_call = True
            try:
                # the latest text: it may have grown while the permit was on its way
                pieces = self._pieces()
                i = self._next_write(pieces)
                if i is None:
                    return False
                self._next_allowed = self._clock() + self._interval
                self.calls += 1
                if i < len(self._handles):
                    await self._sink.edit(self._handles[i], pieces[i])
                    self._shown[i] = pieces[i]
                else:
                    handle = await self._sink.send(pieces[i])
                    self._handles.append(handle)
                    self._shown.append(pieces[i])
            finally:
                self._in_call = False
        return self._next_write(self._pieces()) is not None

    async def _stop_preview(self, *, keep_urgent: bool = False) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        # Never cancel a platform call halfway: discord.py leaves the channel's rate-limit
        # bucket locked, and a cancelled send may still have posted a message we would not
        # know about (the answer would appear twice). A call still waiting for its permit is
        # free to drop, except a first message already queued as urgent (``keep_urgent``):
        # it keeps its place in the queue and will carry the final text.
        keep = self._in_call or (keep_urgent and self._waiting == URGENT)
        if not keep:
            task.cancel()
        self._dirty.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def abort(self) -> None:
        """Stop updating; what is shown stays as it is."""
        await self._stop_preview()

    async def finish(self, final_text: str | None = None) -> list[H]:
        """Show ``final_text`` (or the text so far) in full and stop. Returns every handle."""
        if final_text is not None:
            self._text = final_text
        await self._stop_preview(keep_urgent=True)
        return await deliver(self._catch_up, what="a final answer", deadline=self._deadline)

    async def _catch_up(self) -> list[H]:
        try:
            while True:
                delay = self._next_allowed - self._clock()
                if delay > 0 and self._pacer is None:  # a pacer keeps the chat's own pace
                    await asyncio.sleep(delay)
                if not await self._step(final=True) and self._caught_up():
                    return list(self._handles)
        except RateLimited:
            self.rate_limited += 1
            raise

    def _caught_up(self) -> bool:
        return self._next_write(self._pieces()) is None and len(self._pieces()) <= len(
            self._handles
        )
