"""Throttled streaming: the one helper every adapter uses to show tokens as they arrive.

Platforms punish fast edits (Telegram: about one per second per chat, long bans when ignored;
Discord: about five per five seconds per channel), so a stream of tokens must become a few
coalesced edits. Adapters supply the platform operations (:class:`MessageSink`) and their
limits; this module owns the timer, coalescing, splitting and 429 handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

H = TypeVar("H")


class RateLimited(Exception):
    """Raised by a sink when the platform answered 429; the stream waits and retries."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.2f} s")
        self.retry_after = max(0.0, float(retry_after))


class MessageSink(Protocol[H]):
    async def send(self, text: str) -> H:
        """Post a new message and return a handle for later edits."""
        ...

    async def edit(self, handle: H, text: str) -> None:
        """Replace the text of a message posted by :meth:`send`."""
        ...


def _is_high_surrogate_split(text: str, cut: int) -> bool:
    # Python strings hold code points, so a cut never splits a character by itself; but text that
    # came through UTF-16-minded code may carry lone surrogates. Never cut between a pair.
    return 0 < cut < len(text) and "\ud800" <= text[cut - 1] <= "\udbff"


def split_text(text: str, max_len: int, length: Callable[[str], int] = len) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_len`` (as measured by ``length``).

    Prefers paragraph, then line, then word boundaries in the last part of each piece, so
    words are not cut unless a single word is longer than a whole message.
    """
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    pieces: list[str] = []
    rest = text
    while length(rest) > max_len:
        cut = _longest_prefix(rest, max_len, length)
        window_start = cut // 2  # only accept boundaries in the second half: pieces stay large
        best = -1
        for sep in ("\n\n", "\n", " "):
            pos = rest.rfind(sep, window_start, cut)
            if pos > 0:
                best = pos + len(sep)
                break
        if best <= 0:
            best = cut
        while _is_high_surrogate_split(rest, best):
            best -= 1
        pieces.append(rest[:best].rstrip() or rest[:best])
        rest = rest[best:].lstrip("\n ") if best != cut else rest[best:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _longest_prefix(text: str, max_len: int, length: Callable[[str], int]) -> int:
    """Largest ``n`` with ``length(text[:n]) <= max_len`` (binary search; ``length`` monotone)."""
    if length is len:
        return min(len(text), max_len)
    lo, hi = 0, min(len(text), max_len)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length(text[:mid]) <= max_len:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, 1)


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


class ThrottledStream(Generic[H]):
    """Shows a growing text through a sink, at most one platform call per ``interval``.

    The first text is sent at once (so the user sees something quickly); later changes are
    coalesced and written when the interval has passed. Text past ``max_len`` continues in a
    new message. ``finish`` always delivers the final text, waiting out rate limits.
    """

    def __init__(
        self,
        sink: MessageSink[H],
        *,
        interval: float = 1.0,
        max_len: int = 4096,
        length: Callable[[str], int] = len,
        split: Callable[[str, int], list[str]] | None = None,
        max_retries: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._max_len = max_len
        self._length = length
        self._split = split or (lambda text, n: split_text(text, n, length))
        self._max_retries = max_retries
        self._clock = clock
        self._text = ""
        self._handles: list[H] = []
        self._shown: list[str] = []
        self._next_allowed = 0.0
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
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
        while not self._closed:
            await self._dirty.wait()
            self._dirty.clear()
            delay = self._next_allowed - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)  # coalesce everything that arrives meanwhile
            try:
                more = await self._step()
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
        if not self._text.strip():
            return []
        return [p for p in self._split(self._text, self._max_len) if p.strip()]

    async def _step(self) -> bool:
        """Make at most one platform call towards showing the current text.

        Returns True when more calls are needed to catch up.
        """
        async with self._lock:
            pieces = self._pieces()
            for i, piece in enumerate(pieces):
                if i < len(self._handles):
                    if self._shown[i] == piece:
                        continue
                    self._next_allowed = self._clock() + self._interval
                    self.calls += 1
                    await self._sink.edit(self._handles[i], piece)
                    self._shown[i] = piece
                else:
                    self._next_allowed = self._clock() + self._interval
                    self.calls += 1
                    handle = await self._sink.send(piece)
                    self._handles.append(handle)
                    self._shown.append(piece)
                return i < len(pieces) - 1 or any(
                    shown != want for shown, want in zip(self._shown, pieces, strict=False)
                )
            return False

    async def _stop_preview(self) -> None:
        self._closed = True
        if self._task is not None:
            # Never cancel a platform call halfway: discord.py leaves the channel's rate-limit
            # bucket locked, and a cancelled send may still have posted a message we would not
            # know about (the answer would appear twice). Wait for the call, then cancel.
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def abort(self) -> None:
        """Stop updating; what is shown stays as it is."""
        await self._stop_preview()

    async def finish(self, final_text: str | None = None) -> list[H]:
        """Show ``final_text`` (or the text so far) in full and stop. Returns every handle."""
        await self._stop_preview()
        if final_text is not None:
            self._text = final_text
        failures = 0
        while True:
            delay = self._next_allowed - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if not await self._step() and self._caught_up():
                    return list(self._handles)
            except RateLimited as exc:
                self.rate_limited += 1
                failures += 1
                if failures > self._max_retries:
                    raise
                self._next_allowed = self._clock() + exc.retry_after

    def _caught_up(self) -> bool:
        pieces = self._pieces()
        return len(pieces) <= len(self._handles) and all(
            shown == want for shown, want in zip(self._shown, pieces, strict=False)
        )
