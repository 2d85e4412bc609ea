"""Operating chatbridge: health, readiness and metrics scraped during a real conversation,
flood control, and graceful shutdown (in-process and by SIGTERM) with nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_text import sample

from chatbridge.bots.config import parse_config
from chatbridge.bots.runner import App
from chatbridge.emulators.loopos import LoopOSEmulator

REPO = Path(__file__).resolve().parent.parent


def config_dict(loopos_url: str, store: Path, **limits: Any) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{store}"},
        "backends": {
            "sellers-ai": {
                "type": "loopos",
                "base_url": loopos_url,
                "core_base_url": "https://core.example/",
                "submission_base_url": "https://submission.example/",
                "retry": {"attempts": 2, "base_delay": 0.01},
            }
        },
        "bots": [
            {"name": "terminal", "platform": "console", "backend": "sellers-ai", "user_id": "u-1"}
        ],
        "http": {"listen": "127.0.0.1:0"},
        "limits": limits,
    }


class PipeConsole:
    """The console bot's standard input and output, driven from the test."""

    def __init__(self) -> None:
        read_fd, self._write_fd = os.pipe()
        self.stdin = os.fdopen(read_fd, "r", encoding="utf-8")
        self.stdout = io.StringIO()

    def say(self, line: str) -> None:
        os.write(self._write_fd, (line + "\n").encode())

    def close(self) -> None:
        os.close(self._write_fd)

    async def wait_for(self, text: str, timeout: float = 10) -> str:
        async with asyncio.timeout(timeout):
            while text not in self.stdout.getvalue():
                await asyncio.sleep(0.02)
        return self.stdout.getvalue()


@contextlib.asynccontextmanager
async def console_app(config: dict[str, Any]) -> AsyncIterator[tuple[App, PipeConsole]]:
    """A running App whose console bot the test types into; stopped on the way out."""
    console = PipeConsole()
    app = App(parse_config(config), stdin=console.stdin, stdout=console.stdout)
    await app.start()
    try:
        yield app, console
    finally:
        await app.stop()
        console.close()


async def test_health_readiness_and_metrics_during_a_conversation(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    async with console_app(config_dict(loopos.url, tmp_path / "s.db")) as (app, console):
        assert app.http is not None
        async with httpx.AsyncClient(base_url=app.http.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"store": True, "bot:terminal": True}

            console.say("Quero vender um iPhone 12")
            await console.wait_for("Qual é a capacidade")
            console.say("1")
            await console.wait_for("Em que estado")
            body = (await http.get("/metrics")).text
            assert sample(body, "chatbridge_turns_total", bot="terminal", outcome="ok") == 2
            assert sample(body, "chatbridge_open_sessions", bot="terminal") == 1
            assert (
                sample(
                    body,
                    "chatbridge_backend_latency_seconds_count",
                    bot="terminal",
                    backend="sellers-ai",
                )
                == 2
            )
            assert sample(body, "chatbridge_queued_turns", bot="terminal") == 0

            loopos.faults.status_5xx = 10  # the backend is down: retried, then a plain reply
            console.say("Bom")
            out = await console.wait_for("unavailable right now")
            assert "Traceback" not in out
            body = (await http.get("/metrics")).text
            assert sample(body, "chatbridge_turns_total", bot="terminal", outcome="failed") == 1
            assert (
                sample(body, "chatbridge_backend_errors_total", bot="terminal", kind="unavailable")
                == 1
            )
            # the failed turn left the previous choices pressable; the backend is back
            loopos.faults.status_5xx = 0
            console.say("2")
            out = await console.wait_for("Item criado no LoopOS Core")
            assert "(you chose: Bom)" in out
            url = app.http.url
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/healthz")


async def test_readiness_fails_when_the_store_is_closed(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    async with console_app(config_dict(loopos.url, tmp_path / "s.db")) as (app, _):
        assert app.http is not None and app.store is not None
        await app.store.close()
        async with httpx.AsyncClient(base_url=app.http.url) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"] is False


async def test_flood_control_tells_users_when_to_write_again(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    config = config_dict(loopos.url, tmp_path / "s.db", turns_per_minute=2)
    async with console_app(config) as (_, console):
        for text in ["Quero vender um iPhone 12", "1", "Bom"]:
            console.say(text)
        out = await console.wait_for("sending messages too quickly")
        assert re.search(r"Please wait (5[0-9]|60) s and try again", out), out
        assert len(loopos.requests_to("/chat")) == 2  # the third never reached the backend


async def test_shutdown_mid_turn_tells_the_user_and_loses_nothing(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    config = config_dict(loopos.url, tmp_path / "s.db", shutdown_grace=0.2)
    async with console_app(config) as (_, console):
        loopos.faults.slow_seconds = 5
        console.say("Quero vender um iPhone 12")
        async with asyncio.timeout(5):
            while loopos.in_flight == 0:
                await asyncio.sleep(0.02)
    # leaving the block stopped the app while the turn was still running
    assert "The service is restarting and your message could not be answered" in (
        console.stdout.getvalue()
    )


async def _run_subprocess(
    config: Path,
    first_line: str,
    loopos: LoopOSEmulator,
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatbridge.bots.cli",
        "run",
        "--config",
        str(config),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(f"{first_line}\n".encode())
    await proc.stdin.drain()
    async with asyncio.timeout(15):
        while loopos.in_flight == 0:
            await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _toml(loopos_url: str, store: Path, grace: float) -> str:
    return textwrap.dedent(f"""
        [store]
        url = "sqlite:///{store}"
        [backends.sellers-ai]
        type = "loopos"
        base_url = "{loopos_url}"
        core_base_url = "https://core.example/"
        submission_base_url = "https://submission.example/"
        [[bots]]
        name = "terminal"
        platform = "console"
        backend = "sellers-ai"
        [limits]
        shutdown_grace = {grace}
    """)


async def test_sigterm_lets_a_running_turn_finish_within_the_grace(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(_toml(loopos.url, tmp_path / "s.db", grace=10))
    loopos.faults.slow_seconds = 0.5
    code, out, err = await _run_subprocess(config, "Quero vender um iPhone 12", loopos)
    assert code == 0, err
    assert "Qual é a capacidade" in out  # answered after SIGTERM, before exiting


async def test_sigterm_past_the_grace_interrupts_with_a_notice(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(_toml(loopos.url, tmp_path / "s.db", grace=0.3))
    loopos.faults.slow_seconds = 5
    code, out, err = await _run_subprocess(config, "Quero vender um iPhone 12", loopos)
    assert code == 0, err
    assert "your message could not be answered" in out
    assert "Traceback" not in err
