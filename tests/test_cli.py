"""The command line, driven as a user would: subprocesses, piped input, real files."""

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

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "emulators" / "data" / "sample-phone.jpg"
CLI = [sys.executable, "-m", "chatbridge.bots.cli"]


def run_cli(
    args: list[str], stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


async def run_cli_async(
    args: list[str], stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Like run_cli, but leaves this test's event loop free (for an in-process emulator)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_demo_walks_a_seller_from_description_to_created_item() -> None:
    script = (
        "\n".join(
            [
                "Quero vender um iPhone 12",
                "2",  # 128 GB, pressed by number
                "Bom",  # typed instead of pressed
                "Não",
                f"/image {PHOTO} aqui está",
                "/reset",
                "Quero vender uma PlayStation 5",
            ]
        )
        + "\n"
    )
    proc = run_cli(["demo"], stdin=script)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "Qual é a capacidade de armazenamento?" in out
    assert "[2] 128 GB" in out
    assert "(you chose: 128 GB)" in out
    assert "Item criado no LoopOS Core com o ID LC-" in out
    assert "Envie uma fotografia do item." in out
    assert "Submissão concluída!" in out and "Fotografias: 1" in out
    assert "Apple iPhone 12 128 GB" in out
    assert "this conversation starts over" in out
    after_reset = out.split("this conversation starts over", 1)[1]
    assert "PlayStation 5" in after_reset  # a new submission, not the finished one
    assert "Traceback" not in proc.stderr


def test_demo_explains_bad_input_without_calling_the_backend(tmp_path: Path) -> None:
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("hello")
    script = f"/image {not_a_photo}\n/image {tmp_path / 'missing.jpg'}\n7\n/image\n"
    script += "Quero vender um iPhone 12\n9\n1\n"
    proc = run_cli(["demo"], stdin=script)
    assert proc.returncode == 0, proc.stderr
    assert "There is no choice 9; pick 1 to 3." in proc.stdout
    assert "(you chose: 64 GB)" in proc.stdout
    assert "not a photo I can use" in proc.stdout
    assert "Cannot read" in proc.stdout
    assert "Usage: /image PATH" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_demo_against_shopai_streams_an_answer() -> None:
    proc = run_cli(["demo", "--backend", "shopai"], stdin="I need a phone\n")
    assert proc.returncode == 0, proc.stderr
    assert "assistant> " in proc.stdout
    answer = proc.stdout.split("assistant> ", 1)[1]
    assert len(answer.strip()) > 20
    assert "(!)" not in proc.stdout


def _write_config(path: Path, base_url: str, store: Path) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        [store]
        url = "sqlite:///{store}"

        [backends.sellers-ai]
        type = "loopos"
        base_url = "{base_url}"
        core_base_url = "https://core.example/"
        submission_base_url = "https://submission.example/"

        [backends.shop]
        type = "shopai"
        base_url = "http://127.0.0.1:9"
        license_key = "${{SHOPAI_LICENSE_KEY}}"

        [[bots]]
        name = "terminal"
        platform = "console"
        backend = "sellers-ai"
        user_id = "op-1"

        [limits]
        shutdown_grace = 1
    """)
    )
    return path


def test_check_config_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "c.toml", "http://127.0.0.1:1", tmp_path / "s.db")
    proc = run_cli(["check-config", str(config)], env={"SHOPAI_LICENSE_KEY": "lk-very-secret"})
    assert proc.returncode == 0, proc.stderr
    assert "lk-very-secret" not in proc.stdout + proc.stderr
    assert '"license_key": "**********"' in proc.stdout
    assert '"language": "PT-PT"' in proc.stdout  # defaults shown
    assert "OK (1 bots, 2 backends;" in proc.stderr


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "c.toml", "http://127.0.0.1:1", tmp_path / "s.db")
    env = {k: v for k, v in os.environ.items() if k != "SHOPAI_LICENSE_KEY"}
    proc = subprocess.run(
        [*CLI, "check-config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        f"{config}: backends.shop.license_key: environment variable SHOPAI_LICENSE_KEY"
        in proc.stderr
    )

    bad = tmp_path / "bad.toml"
    bad.write_text(
        config.read_text()
        .replace('base_url = "http://127.0.0.1:1"', 'base_url = "ftp://x"')
        .replace('backend = "sellers-ai"', 'backend = "nope"')
    )
    with pytest.raises(ConfigError) as err:
        load_config(bad, env={"SHOPAI_LICENSE_KEY": "k" * 10})
    assert f"{bad}: backends.sellers-ai.base_url: must be an http" in str(err.value)

    typo = tmp_path / "typo.toml"
    typo.write_text(config.read_text().replace('user_id = "op-1"', 'usr_id = "op-1"'))
    with pytest.raises(ConfigError, match=r"bots\[0\]\.usr_id: unknown key \(check its spelling"):
        load_config(typo, env={"SHOPAI_LICENSE_KEY": "k" * 10})

    unknown = tmp_path / "unknown.toml"
    unknown.write_text(config.read_text().replace('backend = "sellers-ai"', 'backend = "nope"'))
    with pytest.raises(ConfigError, match=r"bots\[0\]\.backend: no backend named 'nope'"):
        load_config(unknown, env={"SHOPAI_LICENSE_KEY": "k" * 10})

    broken = tmp_path / "broken.toml"
    broken.write_text("[store\nurl=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


async def test_run_console_bot_then_admin_cli_on_the_same_store(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    store = tmp_path / "sessions.db"
    config = _write_config(tmp_path / "c.toml", loopos.url, store)
    env = {"SHOPAI_LICENSE_KEY": "lk-very-secret"}
    code, out, err = await run_cli_async(
        ["run", "--config", str(config)], stdin="Quero vender um iPhone 12\n1\n", env=env
    )
    assert code == 0, err
    assert "Em que estado está o item?" in out
    assert "lk-very-secret" not in out + err

    code, out, _ = await run_cli_async(["sessions", "list", "--config", str(config)], env=env)
    assert code == 0
    assert "terminal" in out and "op-1" in out and "1 sessions" in out
    assert "    2  " in out  # two turns counted

    code, out, _ = await run_cli_async(
        ["sessions", "show", "op-1", "--config", str(config)], env=env
    )
    assert code == 0 and "session: " in out

    # the session survives the restart: the same LoopOS session continues the workflow
    code, out, err = await run_cli_async(["run", "--config", str(config)], stdin="Bom\n", env=env)
    assert code == 0, err
    assert "Item criado no LoopOS Core" in out

    code, out, _ = await run_cli_async(
        ["sessions", "reset-all", "--config", str(config)], stdin="no\n", env=env
    )
    assert code == 1 and "cancelled" in out
    code, out, _ = await run_cli_async(
        ["sessions", "reset-all", "--config", str(config)], stdin="yes\n", env=env
    )
    assert code == 0 and "reset 1 sessions of ALL bots" in out
    code, out, _ = await run_cli_async(["sessions", "list", "--config", str(config)], env=env)
    assert "0 sessions" in out
