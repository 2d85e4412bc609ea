"""``chatbridge sessions list|show|reset|reset-all``: the operator's view of the same store.

It opens the store the bots use (SQLite in WAL mode tolerates a reader/writer beside a running
bot). A reset here forgets the stored session reference; the user's next message opens a new
backend session.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from chatbridge.bots.config import Config, mask_url_password
from chatbridge.core.protocols import SessionStore
from chatbridge.core.secrets import safe_error
from chatbridge.core.store import open_store, resolved_store
from chatbridge.core.types import SessionRecord


class SessionsError(Exception):
    """An operator mistake or an unreachable store: one line, exit code 1 or 2."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


async def _open(config: Config) -> SessionStore:
    url, path = resolved_store(config.store.url)
    shown = mask_url_password(url)
    if url.lower().startswith("memory://") or url == ":memory:":
        raise SessionsError(
            f"[store] url = {url!r} keeps sessions inside the running bridge only; there is "
            "nothing to read from here"
        )
    if path is not None and not path.exists():
        raise SessionsError(
            f"no session store at {path} (from [store] url = {config.store.url!r}, relative to "
            f"{Path.cwd()}); run this where the bots run, or fix the path. Nothing was created."
        )
    try:
        return await open_store(url)
    except Exception as exc:
        raise SessionsError(f"cannot open the session store {shown}: {safe_error(exc)}") from None


def _row(r: SessionRecord) -> str:
    k = r.key
    where = f"{k.platform}:{k.chat_id}" + (f"/{k.thread_id}" if k.thread_id else "")
    return (
        f"{k.bot:<12} {k.user_id:<14} {where:<28} {r.backend:<12} {r.turn_count:>5}  "
        f"{r.last_active:%Y-%m-%d %H:%M:%S}  {r.language or '-'}"
    )


HEADER = (
    f"{'BOT':<12} {'USER':<14} {'CHAT':<28} {'BACKEND':<12} {'TURNS':>5}  LAST ACTIVE (UTC)    LANG"
)


async def run_sessions_command(
    config: Config,
    args: argparse.Namespace,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    names = [bot.name for bot in config.bots]
    if args.bot is not None and args.bot not in names:
        raise SessionsError(f"no bot named {args.bot!r} (configured: {', '.join(names)})", 2)
    store = await _open(config)
    url, _ = resolved_store(config.store.url)
    print(f"store: {mask_url_password(url)}", file=sys.stderr)
    try:
        return await _sessions(store, args, out, stdin)
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise SessionsError(f"the session store stopped answering: {safe_error(exc)}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):  # redis' errors do not subclass OSError
            raise SessionsError(f"cannot reach the session store: {safe_error(exc)}") from None
        raise
    finally:
        await store.close()


async def _sessions(
    store: SessionStore, args: argparse.Namespace, out: TextIO, stdin: TextIO
) -> int:
    if args.action == "list":
        records = await store.list(args.bot, limit=args.limit)
        total = await store.count(args.bot)
        print(HEADER, file=out)
        for record in records:
            print(_row(record), file=out)
        print(
            f"{total} sessions" + (f" (showing {len(records)})" if total > len(records) else ""),
            file=out,
        )
        return 0
    if args.action in {"show", "reset"}:
        if not args.user:
            print(f"sessions {args.action}: give a user id", file=sys.stderr)
            return 2
        records = await store.list(args.bot, user_id=args.user, limit=10_000)
        if not records:
            print(f"no sessions for user {args.user}", file=out)
            return 1
        if args.action == "show":
            for r in records:
                print(
                    f"{_row(r)}\n  session: {r.session_ref}\n  created: "
                    f"{r.created_at:%Y-%m-%d %H:%M:%S}",
                    file=out,
                )
            return 0
        for r in records:
            await store.delete(r.key)
        print(f"reset {len(records)} sessions of user {args.user}", file=out)
        return 0
    # reset-all
    total = await store.count(args.bot)
    scope = f"bot {args.bot}" if args.bot else "ALL bots"
    if not args.yes:
        print(f"Reset {total} sessions of {scope}? Type 'yes' to confirm: ", end="", file=out)
        out.flush()
        if stdin.readline().strip().lower() != "yes":
            print("cancelled", file=out)
            return 1
    deleted = await store.delete_all(args.bot)
    print(f"reset {deleted} sessions of {scope}", file=out)
    return 0
