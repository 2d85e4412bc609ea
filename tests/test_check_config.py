"""``chatbridge check-config``: every problem at once, in the operator's words, secrets masked;
``--online`` contacts the platforms, backends and store (here: the local fakes/emulators)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chatbridge.bots.config import ConfigError, load_config
from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.shopai import start_shopai_emulator
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegram

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "chatbridge.bots.cli"]
TG_TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"  # canaries of tests/conftest.py
LICENSE = "test-license"
HEADER_SECRET = "lk-very-secret"
REDIS_PASSWORD = "the-real-key"

LOOPOS = """
[backends.loopos]
type = "loopos"
base_url = "{url}"
core_base_url = "https://core.example/"
submission_base_url = "https://submission.example/"
"""


def check(
    path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CB_")}
    return subprocess.run(
        [*CLI, "check-config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**base, "PYTHONPATH": str(REPO), **(env or {})},
    )


async def check_async(path: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "check-config",
        str(path),
        *args,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_problem_of_a_config_that_cannot_run_is_reported_at_once(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f"""
        [store]
        url = "postgres://chatbridge:pw@db/chatbridge"
        [http]
        listen = "127.0.0.1:8443"
        {LOOPOS.format(url="http://127.0.0.1:9/")}
        [[bots]]
        name = "sellers"
        platform = "telegram"
        backend = "loopos"
        token = "{TG_TOKEN}"
        mode = "webhook"
        webhook_url = "http://127.0.0.1/telegram"
        [[bots]]
        name = "sellers-2"
        platform = "telegram"
        backend = "loopos"
        token = "{TG_TOKEN}"
        mode = "webhook"
        webhook_port = 8443
        [[bots]]
        name = "shoppers"
        platform = "discord"
        backend = "loopos"
        token = ""
        """,
    )
    proc = check(config, "--quiet")
    assert proc.returncode == 2
    err = proc.stderr
    expected = [
        f"{config}: store.url: postgres:// is not supported",
        f"{config}: bots[1].token: the same token as bots[0]",
        f"{config}: bots[2].token: empty; set it to the bot's token from the Developer Portal",
        f"{config}: bots[0].webhook_port: port 8443 is already taken by http.listen",
        f"{config}: bots[1].webhook_port: port 8443 is already taken by bots[0].webhook_port",
        f"{config}: bots[0].webhook_url: Telegram delivers webhooks over https only",
        f"{config}: bots[0].webhook_url: 127.0.0.1 is not reachable from Telegram's servers",
        f"{config}: bots[1].webhook_url: not set: Telegram must be told the public https URL",
        f"{config}: warning: bots[0]: bot sellers is open to everyone",
    ]
    for line in expected:
        assert line in err, (line, err)
    assert "AAH-secret" not in err + proc.stdout
    # run refuses the same file, with the same words
    with pytest.raises(ConfigError, match=r"postgres:// is not supported"):
        load_config(config)


def test_unset_variables_all_at_once_and_no_pydantic_jargon(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
        [backends.loopos]
        type = "loopos"
        base_url = "ftp://nope"
        core_base_url = "${CB_CORE_URL}"
        submission_base_url = "https://s.example/"
        [backends.shopai]
        type = "shopai"
        base_url = "http://127.0.0.1:9"
        license_key = "${CB_LICENSE}"
        [[bots]]
        name = "a"
        backend = "loopos"
        token = "${CB_TOKEN}"
        [[bots]]
        name = "b"
        platform = "slack"
        backend = "shopai"
        """,
    )
    proc = check(config)
    assert proc.returncode == 2
    err = proc.stderr
    for name, key in (
        ("CB_CORE_URL", "backends.loopos.core_base_url"),
        ("CB_LICENSE", "backends.shopai.license_key"),
        ("CB_TOKEN", "bots[0].token"),
    ):
        assert f"{config}: {key}: environment variable {name} is not set" in err
    # a backend *named* loopos keeps its name in the key
    assert f"{config}: backends.loopos.base_url: must be an http:// or https:// URL" in err
    assert f"{config}: bots[0]: missing key platform (one of: console, discord, telegram)" in err
    assert f"{config}: bots[1]: platform = 'slack' is not supported" in err
    assert "discriminator" not in err and "tag" not in err
    assert "Traceback" not in err


def test_secrets_are_masked_headers_and_url_passwords_included(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f"""
        [store]
        url = "redis://:{REDIS_PASSWORD}@127.0.0.1:6399/0"
        [backends.loopos]
        type = "loopos"
        base_url = "http://127.0.0.1:9/"
        core_base_url = "https://core.example/"
        submission_base_url = "https://submission.example/"
        headers = {{ "X-Api-Key" = "{HEADER_SECRET}" }}
        [[bots]]
        name = "t"
        platform = "console"
        backend = "loopos"
        """,
    )
    proc = check(config)
    assert proc.returncode == 0, proc.stderr
    assert HEADER_SECRET not in proc.stdout + proc.stderr
    assert REDIS_PASSWORD not in proc.stdout + proc.stderr
    assert '"X-Api-Key": "**********"' in proc.stdout
    assert '"url": "redis://:**********@127.0.0.1:6399/0"' in proc.stdout
    assert sorted(load_config(config).secrets()) == sorted([HEADER_SECRET, REDIS_PASSWORD])


def test_a_missing_platform_extra_is_an_error(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f"""
        {LOOPOS.format(url="http://127.0.0.1:9/")}
        [[bots]]
        name = "d"
        platform = "discord"
        backend = "loopos"
        token = "discord-secret-token-for-tests"
        allowed_users = [1]
        """,
    )
    code = (
        "import sys; sys.modules['discord'] = None\n"
        "from chatbridge.bots.cli import main\n"
        f"main(['check-config', '-q', {str(config)!r}])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    assert f"{config}: bots[0].platform: discord support is not installed" in proc.stderr
    assert "[discord]" in proc.stderr
    assert f"{config}: warning: bots[0].token: does not look like a Discord bot token" in (
        proc.stderr
    )


def test_unknown_text_overrides_and_locales_are_named(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f"""
        {LOOPOS.format(url="http://127.0.0.1:9/")}
        [[bots]]
        name = "t"
        platform = "console"
        backend = "loopos"
        locale = "fr"
        [bots.texts.pt-PT]
        refused = "Privado."
        refuse = "typo"
        flood = "Espere {{minutes}} min"
        """,
    )
    proc = check(config)
    assert proc.returncode == 2
    assert "bots[0].locale: unknown locale 'fr' (known: en, pt-PT)" in proc.stderr
    assert "pt-PT.refuse: no such text" in proc.stderr
    assert "pt-PT.flood: uses {minutes}, which this text does not offer" in proc.stderr


async def test_online_contacts_every_platform_backend_and_the_store(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    shop = await start_shopai_emulator(license_key=LICENSE)
    telegram = await FakeTelegram().start()
    telegram.add_bot(TG_TOKEN, username="sellers_bot")
    async with FakeDiscord() as discord:
        good = f"""
            [store]
            url = "sqlite:///{tmp_path / "s.db"}"
            {LOOPOS.format(url=loopos.url)}
            [backends.shop]
            type = "shopai"
            base_url = "{shop.url}"
            license_key = "{LICENSE}"
            [[bots]]
            name = "sellers"
            platform = "telegram"
            backend = "loopos"
            token = "{TG_TOKEN}"
            api_base_url = "{telegram.url}/bot"
            allowed_users = [1]
            [[bots]]
            name = "shoppers"
            platform = "discord"
            backend = "shop"
            token = "{discord.token}"
            api_base_url = "{discord.api_base_url}"
            """
        try:
            code, _out, err = await check_async(write(tmp_path, good), "--online", "-q")
            assert code == 0, err
            assert "bots[0]: Telegram OK: bot sellers is @sellers_bot" in err
            assert "bots[1]: Discord OK: bot shoppers logs in as chatbridge-bot" in err
            assert "backends.loopos: LoopOS reachable" in err
            assert "backends.shop: ShopAI init_session OK with the license key" in err
            assert f"store: {tmp_path / 's.db'} does not exist yet" in err
            assert not (tmp_path / "s.db").exists()  # nothing created by a check

            bad = (
                good.replace(TG_TOKEN, "777001:AAH-secret-test-token-0123456789abcdeX")
                .replace(f'license_key = "{LICENSE}"', 'license_key = "wrong-secret-key"')
                .replace(loopos.url, "http://127.0.0.1:9")
                .replace(f'token = "{discord.token}"', 'token = "discord-secret-token-for-tests-x"')
            )
            code, _out, err = await check_async(write(tmp_path, bad), "--online", "-q")
            assert code == 2
            assert "bots[0].token: Telegram rejected the token" in err
            assert "bots[1].token: Discord rejected the token" in err
            assert "backends.loopos.base_url: LoopOS not reachable at http://127.0.0.1:9" in err
            assert "backends.shop.license_key: ShopAI init_session failed" in err
            for secret in ("AAH-secret", "wrong-secret-key", "discord-secret-token"):
                assert secret not in err
        finally:
            await telegram.stop()
            await shop.stop()


def test_discord_bots_of_one_process_share_their_endpoints(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f"""
        {LOOPOS.format(url="http://127.0.0.1:9/")}
        [[bots]]
        name = "d1"
        platform = "discord"
        backend = "loopos"
        token = "discord-secret-token-for-tests"
        allowed_users = [1]
        [[bots]]
        name = "d2"
        platform = "discord"
        backend = "loopos"
        token = "discord-secret-token-for-tests-2"
        api_base_url = "http://proxy:8080/api/v10"
        allowed_users = [1]
        group_policy = "all"
        message_content_intent = false
        """,
    )
    proc = check(config, "-q")
    assert proc.returncode == 2
    assert f"{config}: bots[1].api_base_url: differs from bots[0].api_base_url" in proc.stderr
    warning = f'{config}: warning: bots[1].group_policy: "all" without message_content'
    assert warning in proc.stderr
