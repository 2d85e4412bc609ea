"""Optional features of python-telegram-bot and httpx that chatbridge never uses are not
loaded (bots/extras.py), while anyone else may still import those packages."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTRAS = ("tornado", "cryptography", "aiolimiter", "click", "pygments", "trio")


def run(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_telegram_and_httpx_load_none_of_their_unused_extras() -> None:
    result = run(
        f"""
        import json, sys
        import chatbridge.bots.runner, httpx, telegram.ext
        httpx.AsyncClient()  # builds httpcore's transport (trio's locks and backend)
        from telegram.ext import _updater
        print(json.dumps({{
            "loaded": [m for m in {EXTRAS!r} if m in sys.modules],
            "ptb_webhooks": _updater.WEBHOOKS_AVAILABLE,
        }}))
        """
    )
    assert result["loaded"] == []
    assert result["ptb_webhooks"] is False  # PTB's tornado server: chatbridge uses aiohttp


@pytest.mark.skipif(not installed("tornado"), reason="tornado is not installed here")
def test_other_code_still_imports_them() -> None:
    result = run(
        """
        import json
        import chatbridge.bots.runner, telegram.ext
        import tornado.web
        print(json.dumps({"tornado": tornado.version}))
        """
    )
    assert result["tornado"]


@pytest.mark.skipif(not installed("cryptography"), reason="cryptography is not installed here")
def test_a_package_imported_first_is_left_alone() -> None:
    result = run(
        """
        import json
        import cryptography
        import chatbridge.bots.runner, telegram
        from telegram import _bot
        print(json.dumps({"passport": _bot.CRYPTO_INSTALLED}))
        """
    )
    assert result["passport"] is True
