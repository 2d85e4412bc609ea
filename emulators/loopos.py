"""A runnable local LoopOS AI server, following /work/shared/specs/loopos-*.txt.

Endpoints: ``POST /chat`` (the submission workflow of :mod:`chatbridge.emulators.loopos_workflow`,
server-side state keyed by ``session_id``), ``POST /loopos_ai_decision`` and
``POST /loopos_ai_c2c_descriptor``. Requests are validated with pydantic and refused with a
FastAPI-like 422 body ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``.

Faults for tests, switchable on the Python object (``emulator.faults.status_5xx = 2``) or over
HTTP (``POST /_emulator/faults`` with a JSON object of the same fields):

- ``status_5xx``: the next N API requests answer ``status_code`` (503 by default);
- ``slow_seconds``: every API reply is delayed that long;
- ``status_422``: the next N API requests are refused with a FastAPI-like validation body;
- ``malformed``: the next N API replies are ``malformed_mode`` ("invalid_json" or
  "wrong_shape") and the workflow does not advance.

Strictness (:class:`LoopOSStrict`, ``emulator.strict``): by default only the language codes
the documents use ("PT-PT", "en-US") are accepted, anything else is a 422 on ``language``.
Two readings of DeepChat's ``{text, html}`` can be switched on: ``html_apart`` (the ``html``
carries structure that does not repeat ``text``, as in the document's example answer) and
``several_messages`` (a question is sent as its own message after what leads up to it).
``strict=False`` / ``--lenient`` takes any language (the demo's).

Run: ``python -m chatbridge.emulators.loopos --host 127.0.0.1 --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import logging
import re
import signal
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from chatbridge.emulators.loopos_workflow import Workflow, decide, describe, is_valid_image

__all__ = [
    "LoopOSEmulator",
    "LoopOSFaults",
    "LoopOSStrict",
    "shape_replies",
    "start_loopos_emulator",
]

log = logging.getLogger(__name__)

API_PATHS = ("/chat", "/loopos_ai_decision", "/loopos_ai_c2c_descriptor")


# --- request models (what the real server's FastAPI models would accept) --------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessageIn(_Model):
    role: Literal["user", "assistant"]
    text: str
    html: str | None = None


class ChatRequest(_Model):
    language: str = "PT-PT"
    messages: list[ChatMessageIn]
    images: list[str] = Field(default_factory=list)
    conversation: bool = True
    session_id: str | None = None
    loopos_core_context: str | None = None
    loopos_core_base_url: str
    loopos_submission_base_url: str
    callback_url: str | None = None
    session_extra_data: dict[str, Any] | None = None
    agent_specific: dict[str, Any] | None = None


class DecisionRequest(_Model):
    language: str = "PT-PT"
    prompt: str
    options: list[str] = Field(min_length=1)
    item_context: str | dict[str, Any] | None = None


def _check_image(ref: str) -> str:
    if not is_valid_image(ref):
        raise ValueError("not an image URL or a base64 image data URL")
    return ref


class AgentSpecific(_Model):
    category_name: str = ""
    product_name: str = ""
    brand_name: str = ""
    user_description: str = ""


class DescriptorRequest(_Model):
    language: str = "PT-PT"
    images: list[Annotated[str, AfterValidator(_check_image)]] = Field(min_length=1)
    agent_specific: AgentSpecific | None = None


# --- faults ---------------------------------------------------------------------------------


DOCUMENTED_LANGUAGES = ("PT-PT", "en-US")  # the codes the endpoint page and the guide use


@dataclass
class LoopOSStrict:
    """What the server insists on, and which readings of ``{text, html}`` it answers in."""

    languages: tuple[str, ...] | None = DOCUMENTED_LANGUAGES  # None: any code
    html_apart: bool = False  # html without a copy of text (core/html must show both)
    several_messages: bool = False  # a question after its lead-in, as a message of its own

    @classmethod
    def lenient(cls) -> LoopOSStrict:
        return cls(languages=None)


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.DOTALL)


def _drop_paragraphs(markup: str, lines: set[str]) -> str:
    return _PARAGRAPH.sub(
        lambda m: "" if html.unescape(m.group(1)).strip() in lines else m.group(0), markup
    )


def shape_replies(replies: list[dict[str, str]], strict: LoopOSStrict) -> list[dict[str, str]]:
    """The workflow's replies in the strict reading's shape (see :class:`LoopOSStrict`)."""
    out: list[dict[str, str]] = []
    for reply in replies:
        text, markup = reply["text"], reply.get("html")
        if strict.several_messages and markup:
            sentences = _SENTENCE_END.split(text.strip())
            if len(sentences) > 1:
                out.append({"text": " ".join(sentences[:-1]), "role": "assistant"})
                text = sentences[-1]
                markup = markup.replace(html.escape(reply["text"]), html.escape(text), 1)
        if strict.html_apart and markup:
            lines = [line.strip() for line in text.split("\n") if line.strip()]
            # paragraphs that repeat the text go; a list keeps its items and the text keeps
            # only its lead line, so neither repeats the other
            markup = _drop_paragraphs(markup, set(lines))
            if "<ul>" in markup and lines:
                text = lines[0]
        shaped = {"text": text, "role": "assistant"}
        if markup:
            shaped["html"] = markup
        out.append(shaped)
    return out


@dataclass
class LoopOSFaults:
    status_5xx: int = 0
    status_code: int = 503
    status_422: int = 0
    slow_seconds: float = 0.0
    malformed: int = 0
    malformed_mode: Literal["invalid_json", "wrong_shape"] = "invalid_json"
    off_options: int = 0  # the next N decisions name something that was not offered

    def reset(self) -> None:
        for name, value in asdict(LoopOSFaults()).items():
            setattr(self, name, value)

    def update(self, data: Mapping[str, Any]) -> None:
        """Set the given fields (validated); unknown fields raise ValueError."""
        merged = _FaultsModel.model_validate({**asdict(self), **data})
        for key, value in merged.model_dump().items():
            setattr(self, key, value)


class _FaultsModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status_5xx: int = Field(0, ge=0)
    status_code: int = Field(503, ge=500, le=599)
    status_422: int = Field(0, ge=0)
    slow_seconds: float = Field(0.0, ge=0.0)
    malformed: int = Field(0, ge=0)
    malformed_mode: Literal["invalid_json", "wrong_shape"] = "invalid_json"
    off_options: int = Field(0, ge=0)


def _error_body(exc: ValidationError) -> dict[str, Any]:
    """FastAPI's 422 shape; ``input`` is left out so images are never echoed back."""
    detail = []
    for err in exc.errors(include_url=False, include_input=False):
        item: dict[str, Any] = {
            "type": err["type"],
            "loc": ["body", *err["loc"]],
            "msg": err["msg"],
        }
        if "ctx" in err:
            item["ctx"] = {k: str(v) for k, v in err["ctx"].items()}
        detail.append(item)
    return {"detail": detail}


@dataclass
class LoopOSEmulator:
    """The running server. ``requests`` holds every API request body (in arrival order)."""

    faults: LoopOSFaults = field(default_factory=LoopOSFaults)
    strict: LoopOSStrict = field(default_factory=LoopOSStrict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # parallel to ``requests``
    sessions: dict[str, Workflow] = field(default_factory=dict)
    url: str = ""
    in_flight: int = 0  # API requests being answered now
    peak_in_flight: int = 0
    _runner: web.AppRunner | None = None

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in zip(self.paths, self.requests, strict=True) if p == path]

    def reset(self) -> None:
        self.faults.reset()
        self.requests.clear()
        self.paths.clear()
        self.sessions.clear()
        self.peak_in_flight = self.in_flight

    # --- lifecycle --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # photos arrive as base64
        app.router.add_post("/chat", self._api("/chat", ChatRequest, self._chat))
        app.router.add_post(
            "/loopos_ai_decision", self._api("/loopos_ai_decision", DecisionRequest, self._decide)
        )
        app.router.add_post(
            "/loopos_ai_c2c_descriptor",
            self._api("/loopos_ai_c2c_descriptor", DescriptorRequest, self._describe),
        )
        app.router.add_get("/_emulator/faults", self._get_faults)
        app.router.add_post("/_emulator/faults", self._set_faults)
        app.router.add_post("/_emulator/reset", self._reset)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> LoopOSEmulator:
        # handler_cancellation: a client that gave up (timeout test) stops a slow handler.
        runner = web.AppRunner(
            self.app(), access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- plumbing ---------------------------------------------------------------------------

    def _api(
        self,
        path: str,
        model: type[_Model],
        handler: Callable[[Any], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                return await answer(request)
            finally:
                self.in_flight -= 1

        async def answer(request: web.Request) -> web.Response:
            raw = await request.read()
            body: Any = None
            json_error: str | None = None
            try:
                body = json.loads(raw)
            except ValueError as exc:
                json_error = str(exc)
            self.paths.append(path)
            self.requests.append(body if isinstance(body, dict) else {"_body": body})
            faulted = await self._faulted()
            if faulted is not None:
                return faulted
            if json_error is not None:
                error = {"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                         "ctx": {"error": json_error}}  # fmt: skip
                return web.json_response({"detail": [error]}, status=422)
            try:
                parsed = model.model_validate(body)
            except ValidationError as exc:
                return web.json_response(_error_body(exc), status=422)
            refused = self._refused_language(getattr(parsed, "language", None))
            if refused is not None:
                return refused
            return await handler(parsed)

        return endpoint

    def _refused_language(self, language: str | None) -> web.Response | None:
        allowed = self.strict.languages
        if language is None or allowed is None or language in allowed:
            return None
        names = " or ".join(repr(code) for code in allowed)
        error = {"type": "literal_error", "loc": ["body", "language"],
                 "msg": f"Input should be {names}"}  # fmt: skip
        return web.json_response({"detail": [error]}, status=422)

    async def _faulted(self) -> web.Response | None:
        """Apply the switched-on faults; a response means "answer this instead"."""
        faults = self.faults
        if faults.slow_seconds > 0:
            await asyncio.sleep(faults.slow_seconds)
        if faults.status_5xx > 0:
            faults.status_5xx -= 1
            return web.json_response({"detail": "emulated server error"}, status=faults.status_code)
        if faults.status_422 > 0:
            faults.status_422 -= 1
            error = {"type": "value_error", "loc": ["body", "messages", 0, "text"],
                     "msg": "Value error, emulated validation failure"}  # fmt: skip
            return web.json_response({"detail": [error]}, status=422)
        if faults.malformed > 0:
            faults.malformed -= 1
            if faults.malformed_mode == "wrong_shape":
                return web.json_response({"unexpected": True})
            return web.Response(
                text='[{"text": "truncated', content_type="application/json", status=200
            )
        return None

    # --- endpoints --------------------------------------------------------------------------

    async def _chat(self, req: ChatRequest) -> web.Response:
        session_id = req.session_id or f"anon-{uuid.uuid4()}"
        workflow = self.sessions.get(session_id) if req.conversation else None
        if workflow is None:
            workflow = Workflow(session_id, req.loopos_submission_base_url)
            if req.conversation:
                self.sessions[session_id] = workflow
        user_texts = [m.text for m in req.messages if m.role == "user"]
        text = user_texts[-1] if user_texts else ""
        replies = workflow.step(text, list(req.images), req.language)
        return web.json_response(shape_replies(replies, self.strict))

    async def _decide(self, req: DecisionRequest) -> web.Response:
        context = req.item_context
        if isinstance(context, dict):
            context = json.dumps(context, ensure_ascii=False)
        decision, reasoning = decide(req.prompt, req.options, context or "", req.language)
        if self.faults.off_options > 0:
            self.faults.off_options -= 1
            decision = "Something else entirely"
        return web.json_response({"decision": decision, "reasoning": reasoning})

    async def _describe(self, req: DescriptorRequest) -> web.Response:
        agent = (req.agent_specific or AgentSpecific()).model_dump()
        return web.json_response(describe(agent, req.language))

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.faults))

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            self.faults.update(data)
        except ValidationError as exc:
            return web.json_response(_error_body(exc), status=422)
        except ValueError as exc:
            return web.json_response({"detail": str(exc)}, status=422)
        return web.json_response(asdict(self.faults))

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"status": "ok"})


async def start_loopos_emulator(
    host: str = "127.0.0.1", port: int = 0, *, strict: bool | LoopOSStrict = True
) -> LoopOSEmulator:
    """Start an emulator on ``host:port`` (0 = an ephemeral port; read ``.url``)."""
    if isinstance(strict, bool):
        strict = LoopOSStrict() if strict else LoopOSStrict.lenient()
    return await LoopOSEmulator(strict=strict).start(host, port)


async def _serve(host: str, port: int, strict: bool) -> None:
    emulator = await start_loopos_emulator(host, port, strict=strict)
    print(f"LoopOS emulator listening on {emulator.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local LoopOS AI emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--lenient", action="store_true", help="take any language code (demo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve(args.host, args.port, not args.lenient))


if __name__ == "__main__":
    main()
