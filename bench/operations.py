"""Operator-facing costs: the access gate per message, and how long a failed start takes.

- ``gate``: decisions per second of :class:`core.access.AccessGate` (allowed and refused
  users, a 1,000-id allow-list), i.e. what access control adds to every inbound message.
- ``failstart``: wall time of ``chatbridge run`` with a Telegram bot on a closed port, for a
  few ``[limits] startup_retry`` values (the process must end: systemd restarts it).

Prints figures; asserts nothing.

    python bench/operations.py gate --decisions 200000
    python bench/operations.py failstart --retries 0 2 5
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatbridge.core.access import AccessGate, AccessPolicy, Facts  # noqa: E402


def bench_gate(decisions: int) -> None:
    policy = AccessPolicy.build(allowed_users=range(1000, 2000), allowed_chats=[-100])
    gate = AccessGate("bench", "telegram", policy)
    allowed = Facts(user="1500", chat="1500")
    refused = Facts(user="99", chat="99", language="pt-PT")
    for name, facts in (("allowed", allowed), ("refused", refused)):
        start = time.perf_counter()
        for _ in range(decisions):
            gate.check(facts)
        seconds = time.perf_counter() - start
        print(
            f"gate {name}: {decisions / seconds:,.0f} decisions/s "
            f"({seconds / decisions * 1e6:.2f} µs each)"
        )


def bench_failstart(retries: list[float]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        for retry in retries:
            path = Path(tmp) / "bridge.toml"
            path.write_text(
                textwrap.dedent(
                    f"""
                    [store]
                    url = "sqlite:///{Path(tmp) / "s.db"}"
                    [limits]
                    startup_retry = {retry}
                    [backends.ai]
                    type = "loopos"
                    base_url = "http://127.0.0.1:9/"
                    core_base_url = "http://127.0.0.1:9/"
                    submission_base_url = "http://127.0.0.1:9/"
                    [[bots]]
                    name = "sellers"
                    platform = "telegram"
                    backend = "ai"
                    token = "1234567:bench-token-000000000000000000000000000"
                    api_base_url = "http://127.0.0.1:{port}/bot"
                    """
                )
            )
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "chatbridge.bots.cli", "run", "--config", str(path)],
                capture_output=True,
                timeout=retry + 60,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            seconds = time.perf_counter() - start
            print(
                f"failstart startup_retry={retry:g} s: exit code {proc.returncode} "
                f"after {seconds:.1f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    gate = sub.add_parser("gate")
    gate.add_argument("--decisions", type=int, default=200_000)
    fail = sub.add_parser("failstart")
    fail.add_argument("--retries", type=float, nargs="+", default=[0, 2, 5])
    args = parser.parse_args()
    if args.what == "gate":
        bench_gate(args.decisions)
    else:
        bench_failstart(args.retries)


if __name__ == "__main__":
    main()
