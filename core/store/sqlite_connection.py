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
  once a second, or sooner when the WAL passes :data:`WAL_CHECKPOINT_BYTES`;
  ``journal_size_limit`` truncates the file when SQLite starts it over. SQLite starts the WAL
  over only when a writer finds every frame copied, which never happens while turns write
  without a pause (each PASSIVE checkpoint ends behind the frames written meanwhile); past
  :data:`WAL_RESTART_BYTES` the checkpoint is a RESTART one, which holds writers back (they
  wait off the loop, as for any lock) until the WAL can start over.

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
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: At most this long between two checkpoints of a WAL that has frames.
CHECKPOINT_INTERVAL = 1.0
#: A WAL this large is checkpointed without waiting for the interval (a burst of turns writes
#: tens of MiB a second: every commit appends whole pages).
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024
#: A WAL this large is checkpointed in RESTART mode: writers wait while it runs (a few ms).
WAL_RESTART_BYTES = 16 * 1024 * 1024
#: How often the checkpointer looks at the WAL's size.
CHECKPOINT_POLL = 0.05
#: ``journal_size_limit``: the WAL file is cut back to this size when SQLite starts it over.
#: Below WAL_CHECKPOINT_BYTES, so that the file's size tells how much of it is in use (SQLite
#: writes a restarted WAL from its start; the file grows only past its last frame).
WAL_SIZE_LIMIT = 1024 * 1024

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
    # never while the loop uses it (LoopConnection's gate).
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
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        conn = connect(self.path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.patience_ms)}")
            last = time.monotonic()
            while not self._stopping.wait(CHECKPOINT_POLL):
                try:
                    size = os.stat(self.wal).st_size
                except FileNotFoundError:
                    continue
                now = time.monotonic()
                if size >= WAL_RESTART_BYTES:
                    # most of the copying without holding writers back, then the rest
                    # (what was written meanwhile) holding them
                    self._checkpoint(conn, "PASSIVE")
                    self._checkpoint(conn, "RESTART")
                    last = now
                elif size >= WAL_CHECKPOINT_BYTES or (size and now - last >= CHECKPOINT_INTERVAL):
                    self._checkpoint(conn, "PASSIVE")
                    last = now
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection, mode: str) -> None:
        try:
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.Error as exc:
            log.warning("sqlite store %s: checkpoint failed: %s", self.path, exc)
        self.count += 1


class LoopConnection:
    """Runs work on one sqlite3 connection: inline on the loop when it can, else (another
    process holds the lock, or the caller asks) on a worker thread, one piece at a time in
    the order asked."""

    def __init__(self, conn: sqlite3.Connection, *, path: str, patience_ms: int) -> None:
        self.conn = conn
        self.path = path
        self.patience_ms = patience_ms
        # held while work runs on the worker thread; ``_queued`` counts that work and the work
        # waiting behind it: while it is not 0, new work queues too (nothing jumps the queue)
        self._gate = asyncio.Lock()
        self._queued = 0
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
                    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}").fetchall()
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
        if not off_loop and not self._queued:
            try:
                return work(self.conn)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                off_loop = True
                self.waited += 1
        self._queued += 1
        try:
            await self._gate.acquire()
        except BaseException:
            self._queued -= 1
            raise
        handed_over = False
        try:
            if not off_loop:  # our turn, and nothing else is running
                try:
                    return work(self.conn)
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        raise
                    self.waited += 1
            future = asyncio.get_running_loop().run_in_executor(
                self._thread(), self._patiently, work
            )
            # the gate opens when the thread is done with the connection, even if the caller
            # was cancelled meanwhile
            future.add_done_callback(self._release)
            handed_over = True
            return await asyncio.shield(future)
        finally:
            if not handed_over:
                self._queued -= 1
                self._gate.release()

    def now(self, work: Callable[[sqlite3.Connection], object]) -> bool:
        """Runs ``work`` inline, or does nothing and answers False when it would have to wait
        (other work queued, or the file locked by another connection)."""
        if self._queued:
            return False
        try:
            work(self.conn)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            return False
        return True

    def _release(self, future: asyncio.Future[Any]) -> None:
        self._queued -= 1
        self._gate.release()
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled caller no longer awaits it

    def _thread(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, f"sqlite:{self.path}")
        return self._worker

    def _patiently(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """On the worker thread: ``work`` waiting up to the patience for another connection's
        lock."""
        self.conn.execute(f"PRAGMA busy_timeout = {int(self.patience_ms)}")
        try:
            return work(self.conn)
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed by ``work``
                self.conn.execute("PRAGMA busy_timeout = 0")

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
