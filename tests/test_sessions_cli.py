"""``chatbridge sessions``, ``--version`` and help, driven as an operator would (subprocesses)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "chatbridge.bots.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def config(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [store]
            url = "{store_url}"
            [backends.ai]
            type = "loopos"
            base_url = "http://127.0.0.1:9/"
            core_base_url = "http://127.0.0.1:9/"
            submission_base_url = "http://127.0.0.1:9/"
            [[bots]]
            name = "sellers"
            platform = "console"
            backend = "ai"
            [[bots]]
            name = "buyers"
            platform = "console"
            backend = "ai"
            """
        ),
        encoding="utf-8",
    )
    return path


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=ENV
    )


def test_a_mistyped_sqlite_path_is_refused_not_created(tmp_path: Path) -> None:
    conf = config(tmp_path, "sqlite:///sessions-typo.db")  # relative: to the working directory
    proc = cli("sessions", "list", "--config", str(conf), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"no session store at {tmp_path / 'sessions-typo.db'}" in proc.stderr
    assert "Nothing was created" in proc.stderr
    assert not (tmp_path / "sessions-typo.db").exists()
    assert "0 sessions" not in proc.stdout


def test_the_store_path_read_is_named_in_full(tmp_path: Path) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "s.db").close()  # an existing (empty) database
    conf = config(tmp_path, "sqlite:///s.db")
    proc = cli("sessions", "list", "--config", str(conf), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"store: sqlite:///{tmp_path / 's.db'}" in proc.stderr
    assert "0 sessions" in proc.stdout


def test_an_unknown_bot_is_rejected(tmp_path: Path) -> None:
    conf = config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    proc = cli("sessions", "list", "--bot", "nope", "--config", str(conf))
    assert proc.returncode == 2
    assert "no bot named 'nope' (configured: sellers, buyers)" in proc.stderr


def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = config(tmp_path, f"redis://:the-real-key@127.0.0.1:{port}/0")
    proc = cli("sessions", "list", "--config", str(conf))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("store: ")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("chatbridge sessions: ") and "session store" in lines[0]
    assert "Traceback" not in proc.stderr and "the-real-key" not in proc.stderr


def test_ctrl_c_at_the_reset_all_prompt_exits_130(tmp_path: Path) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "s.db").close()
    conf = config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    proc = subprocess.Popen(
        [*CLI, "sessions", "reset-all", "--config", str(conf)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        # the prompt has no newline: read bytes until it is there, then press Ctrl-C
        seen = b""
        deadline = time.monotonic() + 30
        while b"confirm:" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                seen += os.read(proc.stdout.fileno(), 1024)
        assert b"confirm:" in seen
        time.sleep(0.2)  # now blocked reading the answer
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130


def test_version_and_subcommand_help_with_descriptions() -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("chatbridge 0.")
    top = cli("--help").stdout
    for command in ("demo", "run", "check-config", "sessions"):
        assert command in top
    sessions = " ".join(cli("sessions", "--help").stdout.split())
    assert "A missing SQLite file is never created" in sessions
    assert "only this bot" in sessions and "TOML configuration file" in sessions
    check = " ".join(cli("check-config", "--help").stdout.split())
    assert "--online" in check and "every problem at once" in check


def test_ctrl_c_on_a_running_bridge_exits_130_after_a_graceful_stop(tmp_path: Path) -> None:
    conf = config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    proc = subprocess.Popen(
        [*CLI, "run", "--config", str(conf)],
        stdin=subprocess.PIPE,  # the console bots wait for input that never comes
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    )
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 30
        while seen.count(b"started") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                seen += os.read(proc.stderr.fileno(), 4096)
        assert seen.count(b"started") >= 2, seen
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130


def test_a_memory_store_has_nothing_to_show_from_outside(tmp_path: Path) -> None:
    proc = cli("sessions", "list", "--config", str(config(tmp_path, "memory://")))
    assert proc.returncode == 1
    assert "keeps sessions inside the running bridge only" in proc.stderr
