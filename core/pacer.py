"""One send budget per bot token, shared by all its chats, with priorities.

Platforms limit a bot as a whole (Telegram: about 30 messages a second; Discord: 50 requests a
second) on top of per-chat limits (Telegram: about one a second per chat with short bursts, 20
a minute per group). A bot streaming to a thousand chats at once asks for far more than that,
and on real Telegram sustained 429s end in flood bans of hours. So every counted platform call
waits here for a :class:`Permit` first; the aim is zero 429s provoked, not 429s survived.

A chat's own pace is a :class:`TokenBucket` (a sustained rate with short bursts); the other
limits are windows (:class:`Window`): at most ``limit`` calls in any ``period`` seconds. A call
counts from the moment its permit is granted until ``period`` after its answer came back, so
however the network delays one request against another, no ``limit + 1`` of them can reach the
server within one ``period`` (it stamps a call somewhere between our grant and its answer).

Priorities: :data:`URGENT` (a final answer, a chat's first message, a notice) goes before
:data:`STREAM` (an edit of an answer that is already showing). Streaming calls also keep
headroom free for urgent ones and are spread at the sustained rate, so under pressure a stream
becomes fewer, larger edits. A waiting streaming call may be abandoned (cancelled) at no cost:
nothing was sent yet, and the stream sends its latest text with its next permit.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["STREAM", "URGENT", "Lane", "Limit", "Pacer", "Permit", "TokenBucket", "Window"]

URGENT, STREAM = 0, 1


class Window:
    """At most ``limit`` calls in any ``period`` seconds, counted conservatively (see module).

    ``stream_limit``: how many of the ``limit`` streaming calls may use (the rest is kept for
    urgent ones); streaming calls are also spaced ``period / limit`` apart, or
    ``stream_spacing`` seconds (a budget whose urgent calls never wait, ``limit`` huge, still
    spreads its streaming ones rather than letting a whole second's worth go at once).
    """

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        stream_limit: int | None = None,
        stream_spacing: float | None = None,
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("a window needs limit >= 1 and period > 0")
        self.limit = limit
        self.period = period
        self.stream_limit = max(1, min(limit, stream_limit if stream_limit else limit))
        self.spacing = period / limit if stream_spacing is None else stream_spacing
        self._done: deque[float] = deque()  # answer times of finished calls, ascending
        self._in_flight = 0
        self._last_grant = -math.inf

    def _expire(self, now: float) -> None:
        while self._done and self._done[0] + self.period <= now:
            self._done.popleft()

    def count(self, now: float) -> int:
        self._expire(now)
        return self._in_flight + len(self._done)

    def ready_at(self, now: float, priority: int) -> float:
        """When a call of ``priority`` may go (``now`` if at once; ``inf``: after an answer)."""
        cap = self.limit if priority == URGENT else self.stream_limit
        over = self.count(now) - cap + 1
        at = now
        if over > 0:
            if over > len(self._done):
                return math.inf  # calls in flight fill the window: wait for an answer
            at = self._done[over - 1] + self.period
        if priority != URGENT:
            at = max(at, self._last_grant + self.spacing)
        return at

    def take(self, now: float) -> None:
        self._in_flight += 1
        self._last_grant = now

    def give_back(self) -> None:
        """A granted call was never made (its caller gave up before sending)."""
        self._in_flight -= 1

    def done(self, now: float) -> None:
        self._in_flight -= 1
        if not self._done or self._done[-1] <= now:
            self._done.append(now)
        else:  # answers can come back out of order
            bisect.insort(self._done, now)


class TokenBucket:
    """``rate`` calls a second sustained, bursts of ``burst`` (GCRA), for one lane.

    Its calls go one at a time (the lane's), each counted at its answer: the platform stamps
    a call no later than that, so its own bucket is never fuller than ours. ``stream_burst``:
    the part of a burst streaming calls may use (the rest is kept for urgent ones).
    """

    def __init__(self, rate: float, burst: int, *, stream_burst: int | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.stream_burst = max(1, min(burst, stream_burst if stream_burst else burst))
        self.interval = 1.0 / rate
        self._tat = -math.inf  # theoretical arrival time after the calls answered so far
        self._in_flight = 0

    def count(self, now: float) -> int:
        """Nonzero while the bucket is not full (for pruning idle lanes)."""
        return self._in_flight + (1 if self._tat > now else 0)

    def ready_at(self, now: float, priority: int) -> float:
        burst = self.burst if priority == URGENT else self.stream_burst
        tat = self._tat
        # a call still holding its permit here is one whose answer came back already (a lane
        # runs one call at a time; only a second call inside its block can ask): count it now
        for _ in range(self._in_flight):
            tat = max(tat, now) + self.interval
        return max(now, tat - (burst - 1) * self.interval)

    def take(self, now: float) -> None:
        self._in_flight += 1

    def give_back(self) -> None:
        self._in_flight -= 1

    def done(self, now: float) -> None:
        self._in_flight -= 1
        self._tat = max(self._tat, now) + self.interval


Limit = Window | TokenBucket


@dataclass(frozen=True)
class Lane:
    """Where a call goes: one chat (or channel); ``group``: a group chat, with its own limit."""

    key: Hashable
    group: bool = False


@dataclass
class _LaneState:
    """One lane's own limits; calls in one lane go one at a time, in order."""

    windows: list[Limit]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    hold_until: float = 0.0  # a 429 from the platform holds the lane this long

    def ready_at(self, now: float, priority: int) -> float:
        at = max(now, self.hold_until)
        for window in self.windows:
            at = max(at, window.ready_at(now, priority))
        return at


@dataclass
class Permit:
    """The right to make one counted platform call."""

    pacer: Pacer
    lane: Hashable | None
    priority: int
    owner: asyncio.Task[object] | None = None
    lend: bool = False  # tasks started inside the block (a shielded call) may spend it too
    spent: bool = False
    # until when the places taken in the shared windows (several replicas) cover a call made
    # with this permit; past it (the process stalled, or was frozen, between grant and call)
    # the other replicas may have spent the budget meanwhile: the call takes them again
    shared_until: float = math.inf

    def usable(self, pacer: Pacer, lane: Hashable | None) -> bool:
        if self.spent or self.pacer is not pacer or self.lane != lane:
            return False
        return self.lend or self.owner is asyncio.current_task()


_held: contextvars.ContextVar[Permit | None] = contextvars.ContextVar("pacer_permit", default=None)


class SharedWindows(Protocol):
    """Limits kept outside the process (several replicas of one bot token share them):
    ``take`` returns once a place is taken in every ``(name, limit, period)`` window, with
    the seconds those places cover a call made from now (the windows are counted a little
    longer than the platform's; a call made later may land where another replica's does)."""

    async def take(self, windows: Sequence[tuple[str, int, float]]) -> float: ...


class _Waiter:
    __slots__ = ("future", "priority")

    def __init__(self, priority: int, future: asyncio.Future[None]) -> None:
        self.priority = priority
        self.future = future


class Pacer:
    """The budget of one bot token. ``bot``: the bot-wide window (None = none);
    ``chat``: factory of a new chat's own windows (``group`` tells a group chat)."""

    def __init__(
        self,
        bot: Window | None,
        chat: Callable[[bool], list[Limit]] = lambda group: [],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot = bot
        self._chat_windows = chat
        self._clock = clock
        self._lanes: dict[Hashable, _LaneState] = {}
        self._waiters: list[tuple[int, int, _Waiter]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.waited = 0  # calls that had to wait for the bot-wide budget (for benchmarks)
        self.stale = 0  # calls whose permit's shared places had lapsed: taken again
        # several replicas: the same windows, counted across all of them (core.budget)
        self.shared: SharedWindows | None = None

    # --- lanes ---------------------------------------------------------------------------------

    def _lane(self, lane: Lane) -> _LaneState:
        state = self._lanes.get(lane.key)
        if state is None:
            if len(self._lanes) > 10_000:
                self._prune()
            state = self._lanes[lane.key] = _LaneState(self._chat_windows(lane.group))
        return state

    def hold(self, lane: Lane, seconds: float) -> None:
        """The platform answered 429 in this lane anyway: nothing goes there for ``seconds``."""
        state = self._lane(lane)
        state.hold_until = max(state.hold_until, self._clock() + seconds)

    def _prune(self) -> None:
        now = self._clock()
        for key, lane in list(self._lanes.items()):
            idle = lane.users == 0 and lane.hold_until <= now
            if idle and all(w.count(now) == 0 for w in lane.windows):
                del self._lanes[key]

    # --- permits -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def permit(
        self, lane: Lane | None, priority: int = URGENT, *, lend: bool = False
    ) -> AsyncIterator[Permit]:
        """Wait for the right to make one call in ``lane``; held until the block ends.

        A platform call made inside the block by :meth:`spend` uses this permit instead of
        waiting for another one (the first such call; a second needs its own). ``lend``: also
        a call made by a task started inside the block.
        """
        key = None if lane is None else lane.key
        permit = Permit(self, key, priority, asyncio.current_task(), lend)
        if lane is None:
            await self._take_shared(permit, None)
            await self._take_bot(priority)
            async with self._holding(permit):
                yield permit
            return
        held = _held.get()
        # a second call inside a held permit of the same lane: its lock is ours already
        nested = (
            held is not None
            and held.pacer is self
            and held.lane == key
            and (held.lend or held.owner is asyncio.current_task())
        )
        async with self._in_lane(self._lane(lane), permit, priority, nested):
            yield permit

    @contextlib.asynccontextmanager
    async def _in_lane(
        self, lane: _LaneState, permit: Permit, priority: int, nested: bool
    ) -> AsyncIterator[None]:
        lane.users += 1
        try:
            async with contextlib.nullcontext() if nested else lane.lock:
                await self._wait_lane(lane, priority)
                await self._take_shared(permit, lane)
                await self._take_bot(priority)
                now = self._clock()
                for window in lane.windows:
                    window.take(now)
                try:
                    async with self._holding(permit):
                        yield
                finally:
                    now = self._clock()
                    for window in lane.windows:
                        if permit.spent:
                            window.done(now)
                        else:
                            window.give_back()
        finally:
            lane.users -= 1

    @contextlib.asynccontextmanager
    async def spend(self, lane: Lane | None, priority: int = URGENT) -> AsyncIterator[None]:
        """Around one platform call: uses the permit held by the caller, or waits for one."""
        held = _held.get()
        if held is not None and held.usable(self, None if lane is None else lane.key):
            held.spent = True
            await self._refresh_shared(held)
            yield
            return
        async with self.permit(lane, priority) as permit:
            permit.spent = True
            await self._refresh_shared(permit)
            yield

    async def _refresh_shared(self, permit: Permit) -> None:
        """A permit whose shared places no longer cover a call now takes them again."""
        if self.shared is None or self._clock() <= permit.shared_until:
            return
        self.stale += 1
        lane = None if permit.lane is None else self._lanes.get(permit.lane)
        await self._take_shared(permit, lane)

    @contextlib.asynccontextmanager
    async def _holding(self, permit: Permit) -> AsyncIterator[None]:
        token = _held.set(permit)
        try:
            yield
        finally:
            _held.reset(token)
            if self.bot is not None:
                if permit.spent:
                    self.bot.done(self._clock())
                else:
                    self.bot.give_back()
                self._dispatch()

    async def _wait_lane(self, lane: _LaneState, priority: int) -> None:
        while True:
            now = self._clock()
            at = lane.ready_at(now, priority)
            # (inf: a window full of calls in flight, which in a lane can only be the call
            # this one is nested in, already answered: it goes)
            if at <= now or math.isinf(at):
                return
            await asyncio.sleep(at - now)

    async def _take_shared(self, permit: Permit, lane: _LaneState | None) -> None:
        if self.shared is None:
            return
        key, priority = permit.lane, permit.priority

        def counted(limit: Limit) -> tuple[int, float]:
            """As a sliding window: ``(calls, per seconds)``; a token bucket becomes its
            burst per burst's worth of intervals (the same sustained rate)."""
            if isinstance(limit, TokenBucket):
                burst = limit.burst if priority == URGENT else limit.stream_burst
                return burst, burst * limit.interval
            return (limit.limit if priority == URGENT else limit.stream_limit), limit.period

        limits: list[tuple[str, Limit]] = [] if self.bot is None else [("bot", self.bot)]
        limits += [(f"{key}:{i}", w) for i, w in enumerate(lane.windows if lane else ())]
        windows = [(name, *counted(limit)) for name, limit in limits]
        if windows:
            # from before the take: the places may be stamped anywhere within the call
            asked = self._clock()
            permit.shared_until = asked + await self.shared.take(windows)

    async def _take_bot(self, priority: int) -> None:
        if self.bot is None:
            return
        if not self._waiters and self.bot.ready_at(self._clock(), priority) <= self._clock():
            self.bot.take(self._clock())
            return
        self.waited += 1
        waiter = _Waiter(priority, asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, (priority, next(self._order), waiter))
        self._dispatch()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.bot.give_back()  # granted just as the caller gave up: pass it on
                self._dispatch()
            raise

    def _dispatch(self) -> None:
        """Grant the bot-wide budget to waiters, best priority first, as far as it goes."""
        if self.bot is None:
            return
        while self._waiters:
            priority, _, waiter = self._waiters[0]
            if waiter.future.done():  # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            now = self._clock()
            at = self.bot.ready_at(now, priority)
            if at > now:
                self._wake_at(at)  # (at inf: the next answer dispatches again)
                return
            heapq.heappop(self._waiters)
            self.bot.take(now)
            waiter.future.set_result(None)

    def _wake_at(self, at: float) -> None:
        # one timer at a time, kept when it fires early enough: a thousand waiters arriving
        # together must not churn the event loop's timer heap
        if math.isinf(at) or (self._timer is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(at - self._clock(), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._dispatch()

    @property
    def queued(self) -> int:
        """Calls waiting for the bot-wide budget."""
        return sum(1 for _, _, w in self._waiters if not w.future.done())
