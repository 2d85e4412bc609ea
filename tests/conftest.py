"""Suite-wide guard: no bot token or license key used by any test reaches a log line.

Every log record of the whole run (DEBUG and up, exceptions and stacks included) is written
to ``chatbridge-test-logs-<pid>.txt`` in the temporary folder; at the end of the session the
file is searched for the secrets the tests use. A hit fails the run and prints the lines.
Records of the test servers themselves (the emulators' and fakes' access logs, which see
tokens in request URLs like the real Telegram would) are not the product's and are skipped.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from replica_harness import redis_server

from chatbridge.emulators.loopos import LoopOSEmulator, start_loopos_emulator

# The secrets tests give bots and backends. Keep new test secrets distinctive and list them.
SECRET_CANARIES = (
    "777001:AAH-secret-test-token-0123456789abcdef",  # tests/fakes/telegram_harness.py
    "AAH-secret-test-token-0123456789abcdef",
    "4242:FAKE-token-for-tests",  # tests/test_telegram_fake.py
    "FAKE-token-for-tests",
    "test-license",  # ShopAI emulator's license key in most tests
    "the-real-key",
    "wrong-secret-key",
    "lk-very-secret",  # tests/test_cli.py
    "discord-secret-token-for-tests",  # tests/fakes/discord_api.py
)

# Server-side loggers of the emulators and fakes: not product output.
_SERVER_LOGGERS = (
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.web",
    "socketio.server",
    "engineio.server",
    "chatbridge.emulators",
    "tests",
    "fakes",
)

# One file per pytest process: several runs on one machine must not share it.
_LOG_PATH = Path(tempfile.gettempdir()) / f"chatbridge-test-logs-{os.getpid()}.txt"


class _ProductOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_SERVER_LOGGERS)


def pytest_sessionstart(session: pytest.Session) -> None:
    handler = logging.FileHandler(_LOG_PATH, mode="w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.addFilter(_ProductOnly())
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.set_name("chatbridge-secret-guard")
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "chatbridge-secret-guard":
            handler.close()
            root.removeHandler(handler)
    if not _LOG_PATH.exists():
        return
    leaks: list[str] = []
    with _LOG_PATH.open(encoding="utf-8", errors="replace") as logs:
        for line in logs:
            if any(secret in line for secret in SECRET_CANARIES):
                leaks.append(line.rstrip()[:300])
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "\n".join(leaks[:20])
        message = f"SECRET LEAK: {len(leaks)} log lines carry a test token or license key:\n{text}"
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        else:
            print(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
async def loopos() -> AsyncIterator[LoopOSEmulator]:
    """A LoopOS emulator on 127.0.0.1 for one test."""
    emulator = await start_loopos_emulator()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A fresh redis-server of this test's own (its ``unix://`` URL)."""
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server shared by the tests of a module (each clears or prefixes what it uses)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
