"""Fail fast, fail clear: a start that cannot succeed ends the process, non-zero, in one line.

systemd's ``Restart=on-failure`` and compose's ``restart:`` only act on a process that exits;
an operator reading the journal needs one line saying what failed and what to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec

from chatbridge.bots.config import parse_config
from chatbridge.bots.runner import App, run_app
from tests.fakes.telegram_api import FakeTelegram

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "chatbridge.bots.cli"]
TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"  # a canary of tests/conftest.py


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _telegram_config(tmp_path: Path, api: str, *, fmt: str = "json", retry: float = 1.0) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [store]
            url = "sqlite:///{tmp_path / "s.db"}"
            [limits]
            startup_retry = {retry}
            [logging]
            format = "{fmt}"
            [backends.ai]
            type = "loopos"
            base_url = "http://127.0.0.1:9/"
            core_base_url = "http://127.0.0.1:9/"
            submission_base_url = "http://127.0.0.1:9/"
            [[bots]]
            name = "sellers"
            platform = "telegram"
            backend = "ai"
            token = "{TOKEN}"
            api_base_url = "{api}"
            """
        ),
        encoding="utf-8",
    )
    return path


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # the old behaviour (never exiting) fails here
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )


def test_unreachable_telegram_ends_the_process_non_zero_in_one_redacted_json_line(
    tmp_path: Path,
) -> None:
    config = _telegram_config(tmp_path, f"http://127.0.0.1:{_closed_port()}/bot")
    result = _run(["run", "--config", str(config)])
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    last = lines[-1]
    assert last["level"] == "ERROR"
    assert "telegram bot sellers could not start" in last["msg"]
    assert "api_base_url" in last["msg"]  # what to do
    assert any("retrying" in line["msg"] for line in lines[:-1])  # backoff came first
    assert "AAH-secret" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "ImportError" not in result.stderr and "Unclosed" not in result.stderr


def test_a_store_that_cannot_open_fails_fast(tmp_path: Path) -> None:
    config = _telegram_config(tmp_path, "http://127.0.0.1:9/bot", fmt="plain")
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    text = config.read_text(encoding="utf-8").replace(
        f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 'a-file' / 's.db'}"
    )
    config.write_text(text, encoding="utf-8")
    result = _run(["run", "--config", str(config)])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the store could not be opened" in errors[0] and "[store] url" in errors[0]


def test_a_missing_platform_extra_is_named_with_the_install_command(tmp_path: Path) -> None:
    config = _telegram_config(tmp_path, "http://127.0.0.1:9/bot", fmt="plain")
    code = (
        "import sys; sys.modules['telegram'] = None\n"  # as if python-telegram-bot were absent
        "from chatbridge.bots.cli import main\n"
        f"main(['run', '--config', {str(config)!r}])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1, result.stderr
    assert "telegram support is not installed" in result.stderr
    assert "[telegram]" in result.stderr
    assert "Traceback" not in result.stderr


def test_logging_at_interpreter_shutdown_is_redacted_and_quiet(tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging, sys
            from chatbridge.core.secrets import register_secret
            register_secret("a-long-secret-value")
            logging.basicConfig(stream=sys.stderr)

            class Late:
                def __del__(self):  # runs after sys.meta_path is None
                    logging.getLogger("late").error("closing a-long-secret-value /bot12:abcdef/")

            late = Late()
            """
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "ImportError" not in result.stderr
    assert "closing *** /bot***/" in result.stderr
    assert "a-long-secret-value" not in result.stderr


async def test_a_brief_outage_at_boot_is_ridden_out(tmp_path: Path) -> None:
    port = _closed_port()
    config = parse_config(
        {
            "store": {"url": "memory://"},
            "limits": {"startup_retry": 30},
            "backends": {
                "ai": {
                    "type": "loopos",
                    "base_url": "http://127.0.0.1:9/",
                    "core_base_url": "http://127.0.0.1:9/",
                    "submission_base_url": "http://127.0.0.1:9/",
                }
            },
            "bots": [
                {
                    "name": "sellers",
                    "platform": "telegram",
                    "backend": "ai",
                    "token": TOKEN,
                    "api_base_url": f"http://127.0.0.1:{port}/bot",
                }
            ],
        }
    )
    app = App(config)
    fake = FakeTelegram()
    fake.add_bot(TOKEN)

    async def late_server() -> None:
        await asyncio.sleep(1.5)  # the platform comes back after the first attempt failed
        await fake.start(port)

    server = asyncio.create_task(late_server())
    try:
        await app.start()
        assert app.adapters[0].connected
    finally:
        await server
        await app.stop()
        await fake.stop()


async def test_run_app_closes_what_started_when_the_start_fails(tmp_path: Path) -> None:
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
            "limits": {"startup_retry": 0},
            "backends": {
                "ai": {
                    "type": "loopos",
                    "base_url": "http://127.0.0.1:9/",
                    "core_base_url": "http://127.0.0.1:9/",
                    "submission_base_url": "http://127.0.0.1:9/",
                }
            },
            "bots": [
                {
                    "name": "sellers",
                    "platform": "telegram",
                    "backend": "ai",
                    "token": TOKEN,
                    "api_base_url": f"http://127.0.0.1:{_closed_port()}/bot",
                }
            ],
        }
    )
    app = App(config)
    try:
        await run_app(app)
    except Exception as exc:
        assert "could not start" in str(exc)
    else:
        raise AssertionError("the start should have failed")
    assert app.store is not None and not await app.store.ping()  # closed: no thread left behind


def test_an_unexpected_crash_is_logged_redacted_with_exit_code_1(tmp_path: Path) -> None:
    code = (
        "import chatbridge.bots.cli as cli\n"
        "from chatbridge.core.secrets import register_secret\n"
        "register_secret('the-real-key')\n"
        "def crash(args):\n"
        "    raise RuntimeError('boom with the-real-key inside')\n"
        "cli._cmd_check_config = crash\n"
        "cli.main(['check-config', 'x.toml'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1
    assert "CRITICAL chatbridge chatbridge check-config stopped" in result.stderr
    assert "RuntimeError: boom with *** inside" in result.stderr
    assert "the-real-key" not in result.stderr


async def test_discord_login_failures_say_whether_a_retry_can_help() -> None:
    from chatbridge.adapters.discord_adapter import DiscordAdapter
    from chatbridge.core.engine import Engine
    from chatbridge.core.errors import StartupFailed
    from chatbridge.core.store.memory import MemoryStore
    from tests.discord_harness import ScriptBackend
    from tests.discord_harness import options as discord_options
    from tests.fakes.discord_api import FakeDiscord

    store = await MemoryStore.open()
    engine = Engine(bot="shop", backend=ScriptBackend(), backend_name="s", store=store)
    try:
        async with FakeDiscord() as fake:
            wrong = DiscordAdapter(
                name="shop",
                token="discord-secret-token-for-tests-wrong",
                engine=engine,
                options=discord_options(fake),
                admins=frozenset(),
            )
            try:
                await wrong.start()
            except StartupFailed as exc:
                assert not exc.retryable and "token" in exc.hint
                assert "discord-secret-token" not in str(exc)
            else:
                raise AssertionError("a refused token must fail the start")
            options = msgspec.structs.replace(
                discord_options(fake), api_base_url=f"http://127.0.0.1:{_closed_port()}/api/v10"
            )
        unreachable = DiscordAdapter(
            name="shop",
            token="discord-secret-token-for-tests",
            engine=engine,
            options=options,
            admins=frozenset(),
        )
        try:
            await unreachable.start()
        except StartupFailed as exc:
            assert exc.retryable and "api_base_url" in exc.hint
        else:
            raise AssertionError("an unreachable Discord must fail the start")
    finally:
        await engine.aclose(1.0)
        await store.close()


async def test_a_refused_token_ends_the_start_at_once_and_says_what_to_do(
    tmp_path: Path,
) -> None:
    fake = await FakeTelegram().start()  # knows no bot: every token is refused (401)
    try:
        config = _telegram_config(tmp_path, f"{fake.url}/bot", fmt="plain", retry=60)
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--config",
            str(config),
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # no retry for a refused token: well before startup_retry's 60 s
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await fake.stop()
    text = err.decode()
    assert proc.returncode == 1
    assert "retrying" not in text
    assert "check the bot's token (BotFather's /token)" in text
    assert "AAH-secret" not in text and "Traceback" not in text
