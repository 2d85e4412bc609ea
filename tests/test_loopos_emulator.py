"""The LoopOS emulator over real HTTP on loopback (httpx client, aiohttp server)."""

from __future__ import annotations

import asyncio
import base64
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from backend_contract import TINY_PNG

from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.loopos_workflow import CATALOG, find_product, is_valid_image

PNG_URL = "data:image/png;base64," + base64.b64encode(TINY_PNG).decode()
CORE = "https://core.example/"
SUBMISSION = "https://submission.example/"


@pytest.fixture
async def http(loopos: LoopOSEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=loopos.url, timeout=5.0) as client:
        yield client


def chat_body(text: str, session: str = "s1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "language": "PT-PT",
        "messages": [{"role": "user", "text": text}],
        "images": [],
        "conversation": True,
        "session_id": session,
        "loopos_core_context": "Circular economy marketplace",
        "loopos_core_base_url": CORE,
        "loopos_submission_base_url": SUBMISSION,
    }
    body.update(extra)
    return body


async def chat(http: httpx.AsyncClient, text: str, **kw: Any) -> list[dict[str, Any]]:
    response = await http.post("/chat", json=chat_body(text, **kw))
    assert response.status_code == 200, response.text
    data = response.json()
    assert isinstance(data, list) and data
    for message in data:
        assert message["role"] == "assistant" and isinstance(message["text"], str)
    return data


def buttons(messages: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for m in messages:
        found += re.findall(
            r'<button class="deep-chat-button[^"]*">([^<]+)</button>', m.get("html", "")
        )
    return found


def all_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["text"] for m in messages)


@pytest.mark.parametrize(
    ("missing", "body_key"),
    [
        ("messages", "messages"),
        ("loopos_core_base_url", "loopos_core_base_url"),
        ("loopos_submission_base_url", "loopos_submission_base_url"),
    ],
)
async def test_chat_422_on_missing_required_field(
    http: httpx.AsyncClient, missing: str, body_key: str
) -> None:
    body = chat_body("Olá")
    del body[body_key]
    response = await http.post("/chat", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail == [{"type": "missing", "loc": ["body", missing], "msg": "Field required"}]


async def test_chat_422_on_bad_json_and_bad_message(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/chat", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    body = chat_body("x", messages=[{"role": "robot", "text": "x"}])
    response = await http.post("/chat", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "messages", 0, "role"]


async def test_full_workflow_pt(http: httpx.AsyncClient) -> None:
    first = await chat(http, "Quero vender um iPhone 12")
    assert "iPhone 12" in all_text(first) and "Apple" in all_text(first)
    assert buttons(first) == ["64 GB", "128 GB", "256 GB"]

    again = await chat(http, "não sei")  # unknown input: re-asked with the same buttons
    assert buttons(again) == ["64 GB", "128 GB", "256 GB"]

    condition = await chat(http, "128 GB")
    assert buttons(condition) == ["Como novo", "Bom", "Razoável"]

    created = await chat(http, "Bom")
    item = re.search(r"LC-[0-9A-F]{8}", all_text(created))
    assert item and "LoopOS Core" in all_text(created)
    assert "O ecrã tem riscos?" in all_text(created)
    assert buttons(created) == ["Sim", "Não"]

    assert buttons(await chat(http, "talvez")) == ["Sim", "Não"]
    photo_q = await chat(http, "Não")
    assert "Envie uma fotografia do item" in all_text(photo_q)
    no_photo = await chat(http, "aqui vai")
    assert "Envie uma fotografia do item" in all_text(no_photo)
    bad = await chat(http, "aqui", images=["data:image/png;base64,aGVsbG8="])
    assert "não é válida" in all_text(bad)

    done = await chat(http, "aqui", images=[PNG_URL])
    text = all_text(done)
    assert "Submissão concluída" in text and "Apple iPhone 12 128 GB" in text
    assert item.group(0) in text and "€" in text
    assert f'href="{SUBMISSION}items/{item.group(0)}"' in done[0]["html"]

    after = await chat(http, "obrigado")  # finished session: reminder, never a crash
    assert "concluída" in all_text(after) and buttons(after) == ["Nova submissão"]
    restart = await chat(http, "Nova submissão")
    assert "iPhone 12" in buttons(restart)


async def test_workflow_english_and_brand_only(http: httpx.AsyncClient) -> None:
    models = await chat(http, "Apple", session="en1", language="en-US")
    assert buttons(models) == ["iPhone 12", "MacBook Air M1"]
    start = await chat(http, "MacBook Air M1", session="en1", language="en-US")
    assert "Great!" in all_text(start)
    assert buttons(start) == ["256 GB", "512 GB"]
    await chat(http, "512gb", session="en1", language="en-US")
    created = await chat(http, "like new", session="en1", language="en-US")
    assert "Does the keyboard work properly?" in all_text(created)
    await chat(http, "yes", session="en1", language="en-US")
    done = await chat(
        http, "photo", session="en1", language="en-US", images=["https://img.example/a.jpg"]
    )
    assert "Submission complete" in all_text(done)


async def test_unknown_first_message_suggests_catalog(http: httpx.AsyncClient) -> None:
    reply = await chat(http, "olá bom dia")
    assert "Não consegui identificar" in all_text(reply)
    assert buttons(reply) == [p.name for p in CATALOG]
    empty = await http.post("/chat", json=chat_body("", messages=[]))
    assert empty.status_code == 200 and "identificar" in empty.json()[0]["text"]


async def test_sessions_are_independent(loopos: LoopOSEmulator, http: httpx.AsyncClient) -> None:
    await chat(http, "Quero vender um iPhone 12", session="a")
    b = await chat(http, "Quero vender uma PS5", session="b")
    assert buttons(b) == ["Standard", "Digital"]
    a = await chat(http, "256 GB", session="a")
    assert buttons(a) == ["Como novo", "Bom", "Razoável"]
    assert set(loopos.sessions) == {"a", "b"}
    assert len(loopos.requests_to("/chat")) == 3


def test_catalog_matching_and_image_check() -> None:
    assert find_product("Quero vender um iPhone 12") is CATALOG[0]
    assert find_product("I want to sell my bike") is not None
    assert find_product("casaco de inverno") is not None
    assert find_product("uma torradeira") is None
    assert is_valid_image(PNG_URL)
    assert not is_valid_image("data:image/png;base64,@@@")
    assert not is_valid_image("data:text/plain;base64,aGVsbG8=")
    assert not is_valid_image("ftp://x/y.png")


async def test_decision(http: httpx.AsyncClient) -> None:
    body = {
        "language": "PT-PT",
        "prompt": "What condition?",
        "options": ["Excellent", "Good", "Fair", "Poor"],
        "item_context": "iPhone 12 with scratches",
    }
    first = (await http.post("/loopos_ai_decision", json=body)).json()
    second = (await http.post("/loopos_ai_decision", json=body)).json()
    assert first == second and first["decision"] == "Good" and first["reasoning"]
    body["item_context"] = "ecrã partido"
    assert (await http.post("/loopos_ai_decision", json=body)).json()["decision"] == "Poor"
    body["options"] = []
    response = await http.post("/loopos_ai_decision", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "options"]


async def test_descriptor(http: httpx.AsyncClient) -> None:
    agent = {"category_name": "", "product_name": "", "brand_name": "",
             "user_description": "iPhone 12 em excelente estado"}  # fmt: skip
    response = await http.post(
        "/loopos_ai_c2c_descriptor", json={"images": [PNG_URL], "agent_specific": agent}
    )
    data = response.json()
    assert data["marketplace_posting_title"] == "Apple iPhone 12"
    assert data["value_out_min"] < data["value_out_average"] < data["value_out_max"]
    assert "excelente" in data["description"]
    for images in ([], ["data:image/png;base64,aGVsbG8="]):
        response = await http.post(
            "/loopos_ai_c2c_descriptor", json={"images": images, "agent_specific": agent}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][:2] == ["body", "images"]


async def test_faults_on_the_object(loopos: LoopOSEmulator, http: httpx.AsyncClient) -> None:
    loopos.faults.status_5xx = 2
    loopos.faults.status_code = 500
    assert (await http.post("/chat", json=chat_body("iPhone"))).status_code == 500
    assert (await http.post("/chat", json=chat_body("iPhone"))).status_code == 500
    ok = await http.post("/chat", json=chat_body("iPhone"))
    assert ok.status_code == 200

    loopos.faults.malformed = 1
    response = await http.post("/chat", json=chat_body("128 GB"))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    loopos.faults.update({"malformed": 1, "malformed_mode": "wrong_shape"})
    assert (await http.post("/chat", json=chat_body("128 GB"))).json() == {"unexpected": True}
    # malformed replies did not advance the workflow: storage is still asked
    assert buttons(await chat(http, "banana")) == ["64 GB", "128 GB", "256 GB"]

    loopos.faults.slow_seconds = 0.3
    started = time.monotonic()
    await chat(http, "128 GB")
    assert time.monotonic() - started >= 0.3
    assert len(loopos.requests) == 7


async def test_faults_over_http(loopos: LoopOSEmulator, http: httpx.AsyncClient) -> None:
    response = await http.post("/_emulator/faults", json={"status_5xx": 1, "slow_seconds": 0.05})
    assert response.status_code == 200 and response.json()["status_5xx"] == 1
    assert loopos.faults.status_5xx == 1 and loopos.faults.slow_seconds == 0.05
    assert (await http.post("/chat", json=chat_body("x"))).status_code == 503
    assert (await http.get("/_emulator/faults")).json()["status_5xx"] == 0
    bad = await http.post("/_emulator/faults", json={"status_5xx": -1, "nope": 1})
    assert bad.status_code == 422
    assert (await http.post("/_emulator/faults", json=[1])).status_code == 422
    await http.post("/_emulator/reset")
    assert loopos.faults.slow_seconds == 0 and loopos.requests == [] and loopos.sessions == {}


async def test_runs_as_a_module() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatbridge.emulators.loopos", "--host", "127.0.0.1", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        async with httpx.AsyncClient(base_url=match.group(1), timeout=5) as client:
            reply = (await client.post("/chat", json=chat_body("Quero vender um iPhone 12"))).json()
        assert "iPhone 12" in reply[0]["text"]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
