"""The throttled streaming helper: coalescing, pacing, splitting, 429s, final delivery."""

from __future__ import annotations

import asyncio
import time

import pytest

from chatbridge.core.errors import DeliveryRefused, PlatformUnavailable
from chatbridge.core.retry import deliver
from chatbridge.core.streaming import RateLimited, ThrottledStream, split_text, utf16_len


class PacedSink:
    """A platform that refuses (429) calls closer together than ``min_gap`` seconds."""

    def __init__(self, min_gap: float = 0.0, retry_after: float = 0.05) -> None:
        self.min_gap = min_gap
        self.retry_after = retry_after
        self.calls: list[tuple[float, str, int, str]] = []
        self.messages: list[str] = []
        self.refused = 0
        self._last = -1e9

    def _pace(self) -> None:
        now = time.monotonic()
        if now - self._last < self.min_gap:
            self.refused += 1
            raise RateLimited(self.retry_after)
        self._last = now

    async def send(self, text: str) -> int:
        self._pace()
        self.messages.append(text)
        self.calls.append((time.monotonic(), "send", len(self.messages) - 1, text))
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str) -> None:
        self._pace()
        assert self.messages[handle] != text, "edited with unchanged text"
        self.messages[handle] = text
        self.calls.append((time.monotonic(), "edit", handle, text))


async def test_first_text_is_immediate_and_later_edits_are_coalesced() -> None:
    sink = PacedSink()
    stream = ThrottledStream(sink, interval=0.1, max_len=4096)
    start = time.monotonic()
    await stream.append("Hel")
    await asyncio.sleep(0.01)
    assert sink.messages == ["Hel"]
    assert sink.calls[0][0] - start < 0.05
    for token in ["lo", " wor", "ld", "!"] * 5:
        await stream.append(token)
        await asyncio.sleep(0.005)
    handles = await stream.finish()
    assert handles == [0]
    assert sink.messages == ["Hel" + "lo world!" * 5]
    gaps = [b[0] - a[0] for a, b in zip(sink.calls, sink.calls[1:], strict=False)]
    assert all(g >= 0.09 for g in gaps), gaps
    assert len(sink.calls) < 6  # 20 tokens became a handful of edits


async def test_rate_limit_is_honoured_and_final_text_delivered() -> None:
    sink = PacedSink(min_gap=0.15, retry_after=0.1)
    stream = ThrottledStream(sink, interval=0.02, max_len=4096)
    for i in range(30):
        await stream.append(f"{i} ")
        await asyncio.sleep(0.005)
    await stream.finish("final answer")
    assert sink.refused >= 1
    assert stream.rate_limited == sink.refused
    assert sink.messages == ["final answer"]


async def test_long_text_continues_in_new_messages() -> None:
    sink = PacedSink()
    stream = ThrottledStream(sink, interval=0.0, max_len=50)
    words = " ".join(f"word{i}" for i in range(40))
    for word in words.split(" "):
        await stream.append(word + " ")
    await stream.finish(words)
    assert len(sink.messages) >= 5
    assert all(len(m) <= 50 for m in sink.messages)
    assert " ".join(sink.messages).split() == words.split()


async def test_replace_rewrites_and_unchanged_text_is_never_sent() -> None:
    sink = PacedSink()
    stream = ThrottledStream(sink, interval=0.0, max_len=4096)
    await stream.append("draft")
    await asyncio.sleep(0.01)
    await stream.replace("draft")
    await stream.finish("draft")  # same text: no edit
    assert [c[1] for c in sink.calls] == ["send"]
    stream2 = ThrottledStream(sink, interval=0.0)
    await stream2.append("a")
    await stream2.finish("b")
    assert sink.messages[-1] == "b"


async def test_empty_answer_sends_nothing() -> None:
    sink = PacedSink()
    assert await ThrottledStream(sink).finish("  ") == []
    assert sink.calls == []


async def test_persistent_rate_limit_raises_only_past_the_delivery_deadline() -> None:
    class AlwaysLimited(PacedSink):
        async def send(self, text: str) -> int:
            raise RateLimited(0.001)

    stream = ThrottledStream(AlwaysLimited(), interval=0.0, deadline=0.05)
    with pytest.raises(RateLimited):
        await stream.finish("x")


async def test_a_final_answer_outlasts_many_rate_limits() -> None:
    class LimitedFor(PacedSink):
        refusals = 40  # far more than any fixed number of tries the old loop allowed

        async def send(self, text: str) -> int:
            if self.refusals:
                self.refusals -= 1
                raise RateLimited(0.0)
            return await super().send(text)

    sink = LimitedFor()
    stream = ThrottledStream(sink, interval=0.0)
    await stream.finish("the answer")
    assert sink.messages == ["the answer"]
    assert stream.rate_limited == 40


async def test_a_permanent_refusal_stops_delivery_at_once() -> None:
    class Blocked(PacedSink):
        async def send(self, text: str) -> int:
            self.refused += 1
            raise DeliveryRefused("bot was blocked by the user")

    sink = Blocked()
    with pytest.raises(DeliveryRefused):
        await ThrottledStream(sink, interval=0.0).finish("x")
    assert sink.refused == 1


async def test_deliver_backs_off_on_outages_and_honours_retry_after() -> None:
    outcomes: list[BaseException | None] = [
        PlatformUnavailable("502"),
        RateLimited(0.0),
        PlatformUnavailable("timed out"),
        None,
    ]
    tries = 0

    async def call() -> str:
        nonlocal tries
        tries += 1
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure
        return "delivered"

    assert await deliver(call, what="test", base_delay=0.001) == "delivered"
    assert tries == 4


async def test_deliver_logs_when_it_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    async def call() -> None:
        raise PlatformUnavailable("down")

    with pytest.raises(PlatformUnavailable):
        await deliver(call, what="a notice", deadline=0.02, base_delay=0.001)
    assert any("gave up delivering a notice" in r.getMessage() for r in caplog.records)


def test_split_prefers_boundaries_and_keeps_every_character() -> None:
    text = "para one is here.\n\npara two is a bit longer than that.\nline three"
    pieces = split_text(text, 30)
    assert all(len(p) <= 30 for p in pieces)
    assert pieces[0] == "para one is here."
    assert "".join(pieces).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace(
        "\n", ""
    )


def test_split_hard_cuts_a_long_word_and_counts_utf16() -> None:
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    emoji = "😀" * 10  # two UTF-16 units each
    pieces = split_text(emoji, 5, utf16_len)
    assert all(utf16_len(p) <= 5 for p in pieces)
    assert "".join(pieces) == emoji


async def test_finish_never_cancels_a_platform_call_halfway() -> None:
    class SlowSink(PacedSink):
        def __init__(self) -> None:
            super().__init__()
            self.cancelled = 0
            self.started = asyncio.Event()

        async def send(self, text: str) -> int:
            self.started.set()
            try:
                await asyncio.sleep(0.2)  # a slow platform call
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return await super().send(text)

    sink = SlowSink()
    stream = ThrottledStream(sink, interval=0.0)
    await stream.append("partial")
    await sink.started.wait()
    await stream.finish("partial and final")
    assert sink.cancelled == 0
    assert sink.messages == ["partial and final"]
    assert [c[1] for c in sink.calls] == ["send", "edit"]
