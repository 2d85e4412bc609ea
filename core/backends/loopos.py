"""LoopOS AI over HTTP: ``POST /chat`` turns, plus the decision and C2C descriptor services.

Readings of the spec (see /work/shared/specs/README.md): the session lives on the server,
keyed by a client-made UUID4 ``session_id``; each turn sends only the new user message. 5xx,
timeouts and connection errors are retried with exponential backoff (core.retry); a 422 is a
validation error and is never retried. One shared ``httpx.AsyncClient`` with a bounded pool,
and a semaphore in front of it, because httpx starts the connect/pool timeout when a request
*enters* the pool queue (encode/httpx#1171): without the bound, hundreds of simultaneous turns
all fail with PoolTimeout even against a fast server.

Request bodies are never logged (photos are megabytes of base64): only method, path, status
and latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from chatbridge.core.errors import BackendError
from chatbridge.core.html import parse_reply_html
from chatbridge.core.retry import RetryPolicy
from chatbridge.core.secrets import register_secret
from chatbridge.core.types import (
    ConversationKey,
    Decision,
    Event,
    Failure,
    FailureKind,
    Final,
    Image,
    Inbound,
    ListingDraft,
    ReplyMessage,
)

__all__ = [
    "Decision",
    "LoopOSBackend",
    "LoopOSError",
    "LoopOSRetrySettings",
    "LoopOSSettings",
    "loopos_language",
]

log = logging.getLogger(__name__)

USER_AGENT = "chatbridge/0.1 (+loopos)"
SHARD_SIZE = 16  # connections per httpx client, see LoopOSBackend.__init__


# --- configuration ----------------------------------------------------------------------------


class LoopOSRetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=3, ge=1, le=10)
    base_delay: float = Field(default=1.0, ge=0.0)
    max_delay: float = Field(default=8.0, ge=0.0)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.base_delay, self.max_delay)


class LoopOSSettings(BaseModel):
    """The ``[backends.<name>]`` table of a ``type = "loopos"`` backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["loopos"] = "loopos"
    base_url: str
    core_base_url: str
    submission_base_url: str
    language: str = "PT-PT"
    context: str | None = None  # sent as loopos_core_context
    timeout: float = Field(default=120.0, gt=0)
    retry: LoopOSRetrySettings = LoopOSRetrySettings()
    # A place for future auth headers: kept out of repr so a key never reaches a log.
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    session_extra_data: dict[str, Any] | None = None
    agent_specific: dict[str, Any] | None = None
    max_concurrency: int = Field(default=64, ge=1, le=10_000)  # simultaneous requests to the server

    @field_validator("base_url", "core_base_url", "submission_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


# --- results and errors -------------------------------------------------------------------------


class LoopOSError(BackendError):
    """Raised by the typed calls (``decide``, ``describe_listing``); ``turn`` yields instead.

    A :class:`core.engine.BackendError`, so callers of ``Engine.describe_listing`` catch one
    type whatever the backend; ``.failure`` says what went wrong.
    """


class _ServerError(Exception):
    """A 5xx answer: transient, retried."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


# --- reply models (validate before use, as the guide asks) --------------------------------------


class _ReplyMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    role: str = "assistant"
    html: str | None = None


_REPLY = TypeAdapter(list[_ReplyMessage])


class _DecisionReply(BaseModel):
    model_config = ConfigDict(extra="allow")

    decision: str
    reasoning: str = ""


class _DescriptorReply(BaseModel):
    model_config = ConfigDict(extra="allow")

    marketplace_posting_title: str
    value_out_average: float | None = None
    value_out_min: float | None = None
    value_out_max: float | None = None
    description: str | None = None


def loopos_language(tag: str | None, default: str) -> str:
    """Map a user's IETF tag to a LoopOS language code ("PT-PT", "en-US", ...)."""
    if not tag or not tag.strip():
        return default
    parts = tag.strip().replace("_", "-").split("-")
    lang = parts[0].lower()
    if lang == "pt":
        return "PT-PT"  # the only Portuguese the documentation names
    if lang == "en" and len(parts) == 1:
        return "en-US"
    if len(parts) > 1 and parts[1]:
        return f"{lang}-{parts[1].upper()}"
    return lang


def _validation_text(response: httpx.Response) -> str:
    """A short plain reading of a FastAPI 422 body ("Field required (messages)")."""
    try:
        body = response.json()
    except ValueError:
        return "the request was not accepted"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail.strip():
        return detail.strip()[:300]
    msgs: list[str] = []
    if isinstance(detail, list):
        for item in detail:
            if not isinstance(item, dict) or not isinstance(item.get("msg"), str):
                continue
            loc = [str(p) for p in item.get("loc", []) if p != "body"]
            msgs.append(f"{item['msg']} ({'.'.join(loc)})" if loc else item["msg"])
    return "; ".join(msgs)[:300] or "the request was not accepted"


def _is_transient(exc: BaseException) -> bool:
    return isinstance(
        exc, _ServerError | httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
    )


class LoopOSBackend:
    """:class:`core.protocols.Backend` and :class:`core.protocols.ListingDescriber` for LoopOS."""

    def __init__(
        self,
        settings: LoopOSSettings,
        *,
        name: str = "loopos",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        register_secret(*settings.headers.values())  # a future auth header is a secret
        self._policy = settings.retry.policy()
        self._transport = transport
        self._limit = asyncio.Semaphore(settings.max_concurrency)
        # httpcore's pool scans every connection for every queued request on each change
        # (quadratic): measured at 64 connections it costs more CPU than the requests. So the
        # permits are spread over small clients ("shards") of SHARD_SIZE connections each.
        shards = -(-settings.max_concurrency // SHARD_SIZE)
        self._shard_size = -(-settings.max_concurrency // shards)
        self._clients: list[httpx.AsyncClient | None] = [None] * shards
        self._in_flight = [0] * shards

    # --- HTTP -------------------------------------------------------------------------------

    def _new_client(self) -> httpx.AsyncClient:
        s = self.settings
        # Connections >= the shard's share of permits, so a request holding a permit never
        # waits in the pool (where httpx's timeouts would already be running).
        size = self._shard_size
        limits = httpx.Limits(
            max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0
        )
        timeout = httpx.Timeout(s.timeout, connect=min(s.timeout, 10.0))
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **s.headers}
        return httpx.AsyncClient(
            base_url=s.base_url,
            limits=limits,
            timeout=timeout,
            headers=headers,
            transport=self._transport,
            follow_redirects=False,
        )

    async def _attempt(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        async with self._limit:
            # The least busy shard has a free connection: the permits bound the total.
            shard = min(range(len(self._clients)), key=self._in_flight.__getitem__)
            client = self._clients[shard]
            if client is None:
                client = self._clients[shard] = self._new_client()
            self._in_flight[shard] += 1
            started = time.monotonic()
            try:
                response = await client.post(path, json=payload)
            except httpx.HTTPError as exc:
                log.warning(
                    "POST %s failed after %.0f ms: %s",
                    path,
                    (time.monotonic() - started) * 1000,
                    type(exc).__name__,
                )
                raise
            finally:
                self._in_flight[shard] -= 1
            # the engine logs each turn at INFO; a request that succeeded needs no line of its own
            log.log(
                logging.DEBUG if response.status_code < 400 else logging.INFO,
                "POST %s -> %d in %.0f ms",
                path,
                response.status_code,
                (time.monotonic() - started) * 1000,
            )
        if response.status_code >= 500:
            raise _ServerError(response.status_code)
        return response

    async def _post(self, path: str, payload: Mapping[str, Any]) -> Any:
        """POST with retries; return the parsed JSON or raise :class:`LoopOSError`."""
        try:
            response = await self._policy.call(lambda: self._attempt(path, payload), _is_transient)
        except httpx.TimeoutException as exc:
            raise LoopOSError(
                Failure(FailureKind.TIMEOUT, f"{path}: {type(exc).__name__}", retryable=True)
            ) from exc
        except (_ServerError, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise LoopOSError(
                Failure(FailureKind.UNAVAILABLE, f"{path}: {exc!s}"[:200], retryable=True)
            ) from exc
        except httpx.HTTPError as exc:  # bad URL, unsupported protocol: configuration
            raise LoopOSError(
                Failure(FailureKind.UNAVAILABLE, f"{path}: {type(exc).__name__}")
            ) from exc
        status = response.status_code
        if status == 422:
            text = _validation_text(response)
            raise LoopOSError(Failure(FailureKind.VALIDATION, f"{path}: 422 {text}", False, text))
        if status in (401, 403):
            raise LoopOSError(Failure(FailureKind.AUTH, f"{path}: HTTP {status}"))
        if status == 413:
            raise LoopOSError(Failure(FailureKind.BAD_INPUT, f"{path}: HTTP 413 (too large)"))
        if status == 429:
            raise LoopOSError(Failure(FailureKind.UNAVAILABLE, f"{path}: HTTP 429", True))
        if status >= 400:
            raise LoopOSError(Failure(FailureKind.UNAVAILABLE, f"{path}: HTTP {status}"))
        if status != 200 and not response.content:
            raise LoopOSError(Failure(FailureKind.MALFORMED, f"{path}: HTTP {status}, no body"))
        try:
            return response.json()
        except ValueError as exc:
            raise LoopOSError(
                Failure(FailureKind.MALFORMED, f"{path}: reply is not JSON ({status})")
            ) from exc

    # --- Backend ----------------------------------------------------------------------------

    async def open(self, key: ConversationKey, language: str | None) -> str:
        # The server creates the session on the first /chat that names it: no network here.
        return str(uuid.uuid4())

    def chat_payload(self, session_ref: str, inbound: Inbound) -> dict[str, Any]:
        """The /chat body for one turn (public so tests and tools can inspect it)."""
        s = self.settings
        return {
            "language": loopos_language(inbound.language, s.language),
            "messages": [{"role": "user", "text": inbound.effective_text}],
            "images": [image.data_url() for image in inbound.images],
            "conversation": True,
            "session_id": session_ref,
            "loopos_core_context": s.context,
            "loopos_core_base_url": s.core_base_url,
            "loopos_submission_base_url": s.submission_base_url,
            # "Session metadata" has no documented default: an empty object is the safe form.
            "session_extra_data": dict(s.session_extra_data or {}),
            "agent_specific": s.agent_specific,
        }

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        try:
            data = await self._post("/chat", self.chat_payload(session_ref, inbound))
            messages = self._read_chat_reply(data)
        except LoopOSError as exc:
            log.warning("turn failed: %s", exc.failure.kind)
            yield exc.failure
            return
        yield Final(messages)

    @staticmethod
    def _read_chat_reply(data: Any) -> tuple[ReplyMessage, ...]:
        # The documented reply is a bare array; tolerate {"messages": [...]} as well, since the
        # endpoint page also describes the response as a "messages" field.
        if isinstance(data, dict) and isinstance(data.get("messages"), list):
            data = data["messages"]
        try:
            raw = _REPLY.validate_python(data)
        except ValidationError as exc:
            raise LoopOSError(
                Failure(
                    FailureKind.MALFORMED,
                    f"/chat: not an array of messages ({exc.error_count()} errors)",
                )
            ) from exc
        messages = tuple(
            parse_reply_html(m.html, m.text or "")
            for m in raw
            if m.role == "assistant" and (m.text or m.html)
        )
        messages = tuple(m for m in messages if m.text or m.buttons or m.links)
        if not messages:
            raise LoopOSError(Failure(FailureKind.MALFORMED, "/chat: no assistant message"))
        return messages

    async def close(self, session_ref: str) -> None:
        # The session lives on the server and has no documented end: nothing to release.
        return None

    async def aclose(self) -> None:
        clients, self._clients = self._clients, [None] * len(self._clients)
        for client in clients:
            if client is not None:
                await client.aclose()

    # --- typed services ---------------------------------------------------------------------

    async def decide(
        self,
        prompt: str,
        options: Sequence[str],
        item_context: str = "",
        language: str | None = None,
    ) -> Decision:
        """``/loopos_ai_decision``: pick one of ``options``. Raises :class:`LoopOSError`."""
        payload = {
            "language": loopos_language(language, self.settings.language),
            "prompt": prompt,
            "options": list(options),
            "item_context": item_context,
        }
        reply = _validated(
            _DecisionReply, "/loopos_ai_decision", await self._post("/loopos_ai_decision", payload)
        )
        return Decision(reply.decision, reply.reasoning, dict(reply.model_extra or {}))

    async def describe_listing(
        self, images: Sequence[Image], description: str, language: str | None
    ) -> ListingDraft:
        """``/loopos_ai_c2c_descriptor``: photos + description -> listing. Raises LoopOSError."""
        if not images:
            raise LoopOSError(Failure(FailureKind.BAD_INPUT, "a listing needs at least one photo"))
        payload = {
            "language": loopos_language(language, self.settings.language),
            "images": [image.data_url() for image in images],
            "loopos_core_context": self.settings.context,
            "agent_specific": {
                # Left for the server to infer from the photos and the description.
                "category_name": "",
                "product_name": "",
                "brand_name": "",
                "user_description": description,
            },
        }
        endpoint = "/loopos_ai_c2c_descriptor"
        reply = _validated(_DescriptorReply, endpoint, await self._post(endpoint, payload))
        details: dict[str, str] = {}
        if reply.description:
            details["description"] = reply.description
        for name in ("value_out_min", "value_out_max"):
            value = getattr(reply, name)
            if value is not None:
                details[name] = f"{value:.2f}"
        return ListingDraft(
            title=reply.marketplace_posting_title,
            price=reply.value_out_average,
            currency="EUR",
            details=details,
        )


_Reply = TypeVar("_Reply", bound=BaseModel)


def _validated(model: type[_Reply], endpoint: str, data: Any) -> _Reply:
    """A typed service's reply, or :class:`LoopOSError` (MALFORMED) when its shape is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LoopOSError(
            Failure(FailureKind.MALFORMED, f"{endpoint}: unexpected reply shape")
        ) from exc
