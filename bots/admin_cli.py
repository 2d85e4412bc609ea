"""``chatbridge sessions list|show|reset|reset-all``: the operator's view of the same store.

It opens the store the bots use (SQLite in WAL mode tolerates a reader/writer beside a running
bot). A reset here forgets the stored session reference; the user's next message opens a new
backend session.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from chatbridge.bots.config import Config
from chatbridge.core.store import open_store
from chatbridge.core.types import SessionRecord


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
    store = await open_store(config.store.url)
    try:
        if args.action == "list":
            records = await store.list(args.bot, limit=args.limit)
            total = await store.count(args.bot)
            print(HEADER, file=out)
            for record in records:
                print(_row(record), file=out)
            print(
                f"{total} sessions"
                + (f" (showing {len(records)})" if total > len(records) else ""),
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
    finally:
        await store.close()
