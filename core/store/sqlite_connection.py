"""One SQLite connection used from the event loop's own thread, and the WAL's checkpointer.

Why not a worker thread per statement (aiosqlite): a turn writes a handful of rows, each a
few tens of microseconds of SQLite's time, while each hand-off to a worker thread and back
costs a thread switch and an event-loop wakeup (about 0.1 ms, and milliseconds at p99 on a
busy machine). So statements that take microseconds run inline, on the loop, in the
``async def`` that asks for them, with nothing awaited. What can take long runs on a worker
thread instead:

- **Another process holds the write lock** (the admin CLI, ``chatbridge sessions``): the
  loop's connection has ``busy_timeout = 0``, so SQLite answers SQLITE_BUSY at once instead
  of sleeping on the loop; the same work is then retried on a worker thread that waits up to
  the store's patience (``busy_timeout_ms``) for the lock. Work behind it waits its turn
  (first come, first served), so writes keep their order.
- **Whatever grows with the size of the file**: opening (migrations), pruning, listing and
  counting, closing (the last connection to close checkpoints the WAL).
- **WAL checkpoints**: ``wal_autocheckpoint = 0`` on the loop's connection (otherwise one
  commit in a few hundred would copy the WAL into the database and fsync, inline), and a
  thread of its own with its own connection checkpoints (PASSIVE: it never blocks a writer)
  once a second when the WAL changed (asleep while the store is idle), and every
  :data:`CHECKPOINT_POLL` while the WAL holds :data:`WAL_CHECKPOINT_BYTES` or more. SQLite
  starts the WAL over only when a writer finds every frame copied, which never happens while
  turns write without a pause (each PASSIVE checkpoint ends behind the frames written
  meanwhile); past
  :data:`WAL_RESTART_BYTES` of frames the last checkpoint is a RESTART one, which holds
  writers back for a few milliseconds (they wait off the loop, as for any lock) so the WAL
  starts over. The file keeps its size for the next frames unless it grew past
  :data:`WAL_SIZE_LIMIT`, and is then emptied by the checkpointer (TRUNCATE), not by the
  loop's next commit (``journal_size_limit``: truncating tens of MiB took ~30 ms).

Durability: WAL with ``synchronous = NORMAL``. A commit is written to the WAL file (the
operating system's page cache) before the ``await`` that asked for it returns, without an
fsync: it survives the process being killed (SIGKILL, OOM, a crash), which is what the
delivery journal promises; an operating-system crash or power cut may lose the last commits
(the fsyncs happen at checkpoints).

A work function given to :meth:`LoopConnection.run` must be all or nothing (one statement, or
one ``BEGIN IMMEDIATE`` transaction, see :func:`in_transaction`): after SQLITE_BUSY it runs
again from the start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Seconds between two checkpoints of a WAL that changed.
CHECKPOINT_INTERVAL = 1.0
#: Seconds between two looks at the WAL file, and between checkpoints while turns write a lot
#: (a burst writes tens of MiB a second: every commit appends whole pages).
CHECKPOINT_POLL = 0.05
#: "A lot": the WAL holds this much at a checkpoint.
WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024
#: A WAL holding this much is started over (RESTART checkpoint: writers wait a few ms).
WAL_RESTART_BYTES = 32 * 1024 * 1024
#: A RESTART checkpoint waits for PASSIVE ones to leave fewer frames than this to copy.
RESTART_FRAMES_LEFT = 256
#: A WAL file larger than this is emptied (TRUNCATE checkpoint) when it is started over.
WAL_SIZE_LIMIT = 128 * 1024 * 1024

log = logging.getLogger(__name__)


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY (any extended code): another connection holds a lock we need."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "locked" in str(exc)  # pragma: no cover (sqlite_errorcode is there since 3.11)


def in_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """``body`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back if anything fails.
    IMMEDIATE takes the write lock first, so SQLITE_BUSY comes (if at all) before anything
    was done."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: autocommit; transactions are opened explicitly (in_transaction).
    # check_same_thread=False: the connection moves to a worker thread when work must wait,
    # never while the loop uses it (LoopConnection's queue).
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def wal_mode(conn: sqlite3.Connection, patience_ms: int) -> None:
    """Switch the file to WAL. SQLite does not wait on a lock for this pragma (no busy
    handler): another process creating the same file at the same moment makes it fail at
    once, so it is retried for up to ``patience_ms``."""
    deadline = time.monotonic() + patience_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


class Checkpointer(threading.Thread):
    """Copies the WAL into the database now and then, from a connection of its own."""

    def __init__(self, path: str, patience_ms: int) -> None:
        super().__init__(name=f"sqlite-checkpoint:{path}", daemon=True)
        self.path = path
        self.wal = path + "-wal"
        self.patience_ms = patience_ms
        #: checkpoints run so far (tests and benchmarks read it)
        self.count = 0
        #: set by the loop when it used the connection: asleep until then (an idle store
        #: costs no wakeups, a busy one a look every CHECKPOINT_POLL)
        self.used = threading.Event()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.used.set()

    def run(self) -> None:
        conn = connect(self.path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.patience_ms)}")
            frame = int(conn.execute("PRAGMA page_size").fetchone()[0]) + 24
            seen: tuple[int, int] | None = None  # the WAL file's (mtime, size) at the last one
            last = time.monotonic()
            heavy = False  # the WAL held much at the last checkpoint
            while True:
                self.used.wait()
                if self._stopping.wait(CHECKPOINT_POLL):
                    break
                self.used.clear()  # before looking: a write from now on sets it again
                try:
                    stat = os.stat(self.wal)
                except FileNotFoundError:
                    continue
                if (stat.st_mtime_ns, stat.st_size) == seen:
                    continue  # nothing written since
                grown = stat.st_size - (seen[1] if seen else 0) >= WAL_CHECKPOINT_BYTES
                if not (heavy or grown or time.monotonic() - last >= CHECKPOINT_INTERVAL):
                    self.used.set()  # written, not due yet: look again soon
                    continue
                seen, last = (stat.st_mtime_ns, stat.st_size), time.monotonic()
                frames = self._checkpoint(conn, "PASSIVE")
                # the WAL holds this since it last started over (usually: since the last
                # checkpoint, the next writer starts it over once every frame is copied)
                heavy = frames * frame >= WAL_CHECKPOINT_BYTES
                if frames * frame >= WAL_RESTART_BYTES:
                    self._restart(conn, frames, stat.st_size > WAL_SIZE_LIMIT)
        finally:
            conn.close()

    def _restart(self, conn: sqlite3.Connection, frames: int, truncate: bool) -> None:
        """The copying without holding writers back, pass after pass (each copies what was
        written during the last, so fewer pages) until little is left, then the rest holding
        them (RESTART: they wait meanwhile, a few milliseconds) so the WAL starts over;
        TRUNCATE also empties a file grown past WAL_SIZE_LIMIT (tens of ms: rare)."""
        for _ in range(3):
            more = self._checkpoint(conn, "PASSIVE")
            if more - frames < RESTART_FRAMES_LEFT:
                break
            frames = more
        self._checkpoint(conn, "TRUNCATE" if truncate else "RESTART")

    def _checkpoint(self, conn: sqlite3.Connection, mode: str) -> int:
        """Frames in the WAL when the checkpoint started (-1 if it failed)."""
        self.count += 1
        try:
            return int(conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()[0][1])
        except sqlite3.Error as exc:
            log.warning("sqlite store %s: checkpoint failed: %s", self.path, exc)
            return -1


@dataclass(eq=False)
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    off_loop: bool
    done: asyncio.Future[Any]


class LoopConnection:
    """Runs work on one sqlite3 connection: inline on the loop when it can, else (another
    process holds the lock, or the caller asks) on a worker thread, one piece at a time in
    the order asked."""

    def __init__(self, conn: sqlite3.Connection, *, path: str, patience_ms: int) -> None:
        self.conn = conn
        self.path = path
        self.patience_ms = patience_ms
        # work waiting behind the piece on the worker thread (``_away``); while there is any,
        # new work queues too: nothing jumps the queue
        self._queue: deque[_Job] = deque()
        self._away = False
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        #: how many times work found the file locked and waited on the worker thread
        self.waited = 0
        self.checkpointer: Checkpointer | None = None

    @classmethod
    async def open(
        cls, path: str, *, patience_ms: int, setup: Callable[[sqlite3.Connection], None]
    ) -> LoopConnection:
        """Connect, configure, and run ``setup`` (migrations...) off the loop."""

        def opening() -> sqlite3.Connection:
            conn = connect(path)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(patience_ms)}")
                if path != ":memory:":
                    wal_mode(conn, patience_ms)
                    conn.execute("PRAGMA synchronous = NORMAL")
                    conn.execute("PRAGMA wal_autocheckpoint = 0")
                setup(conn)
                conn.execute("PRAGMA busy_timeout = 0")  # on the loop: never sleep on a lock
            except BaseException:
                conn.close()
                raise
            return conn

        db = cls(await asyncio.to_thread(opening), path=path, patience_ms=patience_ms)
        if path != ":memory:":
            db.checkpointer = Checkpointer(path, patience_ms)
            db.checkpointer.start()
        return db

    async def run(self, work: Callable[[sqlite3.Connection], T], *, off_loop: bool = False) -> T:
        """``work(conn)``'s result. Inline (nothing awaited) unless other work is queued,
        ``off_loop`` is asked, or the database is locked by another connection."""
        if self.checkpointer is not None and not self.checkpointer.used.is_set():
            self.checkpointer.used.set()
        if not off_loop and not self._away and not self._queue:
            try:
                return work(self.conn)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                off_loop = True
                self.waited += 1
        job = _Job(work, off_loop, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._pump()
        result: T = await job.done  # cancelling the caller skips the job if not started
        return result

    def now(self, work: Callable[[sqlite3.Connection], object]) -> bool:
        """Runs ``work`` inline, or does nothing and answers False when it would have to wait
        (other work queued, or the file locked by another connection)."""
        if self._away or self._queue:
            return False
        try:
            work(self.conn)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            return False
        return True

    def _pump(self) -> None:
        """Runs the queue in order until it is empty or a piece must go to the worker thread:
        inline pieces all at once (their callers wake together, not one loop step each)."""
        while self._queue and not self._away:
            job = self._queue.popleft()
            if job.done.cancelled():
                continue
            if not job.off_loop:
                try:
                    job.done.set_result(job.work(self.conn))
                    continue
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        job.done.set_exception(exc)
                        continue
                    self.waited += 1
                except Exception as exc:
                    job.done.set_exception(exc)
                    continue
            self._away = True
            future = asyncio.get_running_loop().run_in_executor(
                self._thread(), self._patiently, job.work
            )
            # the connection is free for others once the thread is done with it, even if the
            # caller was cancelled meanwhile
            future.add_done_callback(functools.partial(self._back, job))

    def _back(self, job: _Job, future: asyncio.Future[Any]) -> None:
        self._away = False
        if future.cancelled():
            job.done.cancel()
        elif (exc := future.exception()) is not None:
            if not job.done.done():
                job.done.set_exception(exc)
        elif not job.done.done():
            job.done.set_result(future.result())
        self._pump()

    def _thread(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, f"sqlite:{self.path}")
        return self._worker

    def _patiently(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """On the worker thread: ``work`` waiting up to the patience for another connection's
        lock."""
        # Polled rather than SQLite's busy handler, whose sleeps grow to 100 ms: the usual lock
        # here is a RESTART checkpoint of a few milliseconds, and every write of the process
        # queues behind this one.
        deadline = time.monotonic() + self.patience_ms / 1000
        pause = 0.0005
        while True:
            try:
                return work(self.conn)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    async def close(self) -> None:
        """Stops the checkpointer, then closes the connection (the last one to close
        checkpoints the whole WAL and removes it), off the loop."""
        checkpointer, self.checkpointer = self.checkpointer, None

        def closing(conn: sqlite3.Connection) -> None:
            if checkpointer is not None:
                checkpointer.stop()
                checkpointer.join()
            conn.close()

        try:
            await self.run(closing, off_loop=True)
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=False)
