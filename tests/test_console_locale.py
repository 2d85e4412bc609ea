"""The console's own words (banner, prompts, /help, usage lines, "(you chose: ...)", service
replies) come from the catalogue in the console's language: `chatbridge demo --locale pt-PT`."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backend_contract import TINY_PNG

from chatbridge.adapters.console import ConsoleAdapter
from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings
from chatbridge.core.engine import Engine
from chatbridge.core.locales import en, pt_pt
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.texts import Catalogue, UserTexts
from chatbridge.emulators.loopos import LoopOSEmulator
from tests.test_cli import PHOTO, run_cli

# The English chrome the console used to print whatever the language
ENGLISH_CHROME = (
    "you> ",
    "assistant> ",
    "(you chose",
    "Usage:",
    "Commands:",
    "There is no choice",
    "Cannot read",
    "Conversation reset",
    "talking to bot",
)


def test_demo_speaks_european_portuguese_with_locale_pt_pt(tmp_path: Path) -> None:
    text_file = tmp_path / "notas.txt"
    text_file.write_text("olá")
    script = "\n".join(
        [
            "/help",
            "Quero vender um iPhone 12",
            "9",  # no such choice
            "2",  # 128 GB
            "/image",
            f"/image {tmp_path / 'nada.jpg'}",
            f"/image {text_file}",
            "/listing",
            "/condition",
            f"/image {PHOTO} aqui está",
            "/reset",
        ]
    )
    proc = run_cli(["demo", "--locale", "pt-PT"], stdin=script + "\n")
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    for english in ENGLISH_CHROME:
        assert english not in out, english
    assert pt_pt.TEXTS["console_help"] in out
    assert "você> Quero vender um iPhone 12" in out
    assert "assistente> " in out
    assert "Qual é a capacidade de armazenamento?" in out  # the assistant speaks PT-PT too
    assert pt_pt.TEXTS["console_no_choice"].format(n=9, count=3) in out
    assert "(escolheu: 128 GB)" in out
    assert f"(!) {pt_pt.TEXTS['console_image_usage']}" in out
    assert pt_pt.TEXTS["console_no_file"].format(path=tmp_path / "nada.jpg") in out
    assert pt_pt.TEXTS["not_a_photo"] in out
    assert f"(!) {pt_pt.TEXTS['console_listing_usage']}" in out
    assert f"(!) {pt_pt.TEXTS['condition_usage']}" in out
    assert f"(i) {pt_pt.TEXTS['reset_done']}" in out
    assert "Traceback" not in proc.stderr


def test_demo_without_locale_keeps_its_english_chrome() -> None:
    proc = run_cli(["demo"], stdin="/help\n/image\n")
    assert proc.returncode == 0, proc.stderr
    assert en.TEXTS["console_help"] in proc.stdout
    assert f"(!) {en.TEXTS['console_image_usage']}" in proc.stdout


@pytest.fixture
async def engine(loopos: LoopOSEmulator) -> AsyncIterator[Engine]:
    settings = LoopOSSettings.from_dict(
        {
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "timeout": 5.0,
            "retry": {"attempts": 1},
        }
    )
    backend = LoopOSBackend(settings)
    store = await MemoryStore.open()
    engine = Engine(
        bot="console",
        backend=backend,
        backend_name="loopos",
        store=store,
        texts=UserTexts(Catalogue("pt-PT")),  # a console bot with locale = "pt-PT"
    )
    try:
        yield engine
    finally:
        await engine.aclose()
        await backend.aclose()
        await store.close()


async def test_console_services_and_their_failures_in_portuguese(
    engine: Engine, loopos: LoopOSEmulator, tmp_path: Path
) -> None:
    out = io.StringIO()
    photo = tmp_path / "item.png"
    photo.write_bytes(TINY_PNG)
    console = ConsoleAdapter(name="console", engine=engine, stdin=io.StringIO(), stdout=out)
    await console.handle_line("/condition iPhone 12, como novo")
    await console.handle_line(f"/listing {photo} iPhone 12 Pro; marca: Apple")
    loopos.faults.status_422 = 1
    await console.handle_line(f"/listing {photo} iPhone 12 Pro; marca: Apple")
    refused = out.getvalue().splitlines()[-1]
    loopos.faults.status_5xx = 1  # no reason given: the command's own words
    await console.handle_line("/condition iPhone 12, como novo")
    lines = out.getvalue().splitlines()
    assert lines[-1] == f"(!) {pt_pt.TEXTS['condition_failed']}"
    grades = {pt_pt.TEXTS[f"condition_{g}"] for g in ("excellent", "good", "fair", "poor")}
    assert re.sub(r"^Estado: ", "", lines[0]) in grades, lines[0]
    assert any(line.startswith("Preço: ") for line in lines)
    assert any(line.startswith("Intervalo de preço: ") for line in lines), lines
    assert not any("value_out" in line for line in lines), "no backend field names"
    # a refusal with a reason reads as that reason, in Portuguese
    assert refused == "(!) " + pt_pt.TEXTS["rejected"].format(fields="text")
