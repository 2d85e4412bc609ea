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

Inside a turn, retries respect the turn's deadline (core.deadline): each attempt is bounded by
the time left, and no retry starts that could not finish, so the backend reports its own
failure before the engine gives up on the turn. Language codes are mapped to the documents'
("PT-PT", "en-US"); a code the server refuses with a 422 on ``language`` is replaced by the
configured language, once, and not sent again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

from chatbridge.core.backends.loopos_refusals import refusal, refuses_language
from chatbridge.core.deadline import deadline
from chatbridge.core.errors import BackendError
from chatbridge.core.html import parse_reply_html
from chatbridge.core.http11_httpx import Http11Transport
from chatbridge.core.images import human_size
from chatbridge.core.retry import RetryPolicy
from chatbridge.core.secrets import register_secret
from chatbridge.core.settings import FrozenTable, Secret
from chatbridge.core.types import (
    ConversationKey,
    Decision,
    Event,
    Failure,
    FailureKind,
    FailureReason,
    Final,
    Image,
    Inbound,
    ListingDraft,
    ListingRequest,
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
DOCUMENTED_LANGUAGES = ("PT-PT", "en-US")  # the codes the endpoint page and the guide use
SHARD_SIZE = 16  # connections per httpx client, see LoopOSBackend.__init__


# --- configuration ----------------------------------------------------------------------------


class LoopOSRetrySettings(FrozenTable, frozen=True, kw_only=True):
    attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    base_delay: Annotated[float, Meta(ge=0.0)] = 1.0
    max_delay: Annotated[float, Meta(ge=0.0)] = 8.0

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.base_delay, self.max_delay)


def _http_url(value: str) -> str | None:
    if value.strip().startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL"


class LoopOSSettings(FrozenTable, frozen=True, kw_only=True):
    """The ``[backends.<name>]`` table of a ``type = "loopos"`` backend."""

    type: Literal["loopos"] = "loopos"
    base_url: str
    core_base_url: str
    submission_base_url: str
    language: str = "PT-PT"
    context: str | None = None  # sent as loopos_core_context
    timeout: Annotated[float, Meta(gt=0)] = 120.0
    retry: LoopOSRetrySettings = LoopOSRetrySettings()
    # A place for future auth headers: secrets, so a key never reaches a log or a dump.
    headers: dict[str, Secret] = {}
    session_extra_data: dict[str, Any] | None = None
    agent_specific: dict[str, Any] | None = None
    # simultaneous requests to the server
    max_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 64
    # kept back from the turn's deadline, to tell the user rather than be cut off
    deadline_reserve: Annotated[float, Meta(ge=0)] = 2.0
    # all photos of one request together, before base64 (which adds a third)
    max_request_image_bytes: Annotated[int, Meta(ge=1)] = 25 * 1024 * 1024

    key_checks = dict.fromkeys(("base_url", "core_base_url", "submission_base_url"), _http_url)

    def __post_init__(self) -> None:
        for key in ("base_url", "core_base_url", "submission_base_url"):
            force_setattr(self, key, getattr(self, key).strip())
        super().__post_init__()

    def header_values(self) -> dict[str, str]:
        """The ``headers`` table, secrets revealed (for the HTTP client only)."""
        return {name: value.get_secret_value() for name, value in self.headers.items()}


# --- results and errors -------------------------------------------------------------------------


class LoopOSError(BackendError):
    """Raised by the typed calls (``decide``, ``describe_listing``); ``turn`` yields instead.

    A :class:`core.engine.BackendError`, so callers of ``Engine.describe_listing`` catch one
    type whatever the backend; ``.failure`` says what went wrong.
    """


class _LanguageRefused(LoopOSError):
    """A 422 on the ``language`` field: the server does not take that code."""


class _ServerError(Exception):
    """A 5xx answer: transient, retried."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


# --- reply models (validate before use, as the guide asks) --------------------------------------


class _ReplyMessage(msgspec.Struct):  # other keys are ignored
    text: str | None = None
    role: str = "assistant"
    html: str | None = None


class _DecisionReply(msgspec.Struct):  # other keys are kept: Decision.extra
    decision: str
    reasoning: str = ""


class _DescriptorReply(msgspec.Struct):
    marketplace_posting_title: str
    value_out_average: float | None = None
    value_out_min: float | None = None
    value_out_max: float | None = None
    description: str | None = None


def loopos_language(tag: str | None, default: str) -> str:
    """Map a user's IETF tag to a LoopOS language code.

    The documents name two codes, "PT-PT" and "en-US": every Portuguese and every English tag
    maps to them. Other languages keep the documents' shape ("de" -> "de", "es-419" ->
    "es-419"); a server that refuses one gets the configured language instead (see
    :meth:`LoopOSBackend._language`).
    """
    if not tag or not tag.strip():
        return default
    parts = tag.strip().replace("_", "-").split("-")
    lang = parts[0].lower()
    if lang == "pt":
        return "PT-PT"  # the only Portuguese the documentation names
    if lang == "en":
        return "en-US"  # the only English the documentation names
    if len(parts) > 1 and parts[1]:
        return f"{lang}-{parts[1].upper()}"
    return lang


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        register_secret(*settings.header_values().values())  # a future auth header is a secret
        self._policy = settings.retry.policy()
        # httpx's API on chatbridge's HTTP/1.1 client (core/http11_httpx.py), one for every
        # shard: no httpcore, anyio or h11 in the process (-5.9 MiB), no pool rescanning its
        # queue. A test may give another transport.
        self._transport = transport or Http11Transport(max_idle=settings.max_concurrency)
        self._limit = asyncio.Semaphore(settings.max_concurrency)
        # With httpx's own transport, httpcore's pool scans every connection for every queued
        # request on each change (quadratic): measured at 64 connections it costs more CPU
        # than the requests. So the permits are spread over small clients ("shards") of
        # SHARD_SIZE connections each.
        shards = -(-settings.max_concurrency // SHARD_SIZE)
        self._shard_size = -(-settings.max_concurrency // shards)
        self._clients: list[httpx.AsyncClient | None] = [None] * shards
        self._in_flight = [0] * shards
        self._refused_languages: set[str] = set()  # codes the server answered 422 to
        if settings.language not in DOCUMENTED_LANGUAGES:
            log.warning(
                "LoopOS backend %s: language %r is not one the documents use (%s); a server "
                "that refuses it fails every turn",
                name,
                settings.language,
                ", ".join(DOCUMENTED_LANGUAGES),
            )
        for url in (settings.base_url,):
            if url.startswith("http://") and not _is_loopback(url):
                # "Use HTTPS: All requests must use HTTPS" (integration guide)
                log.warning(
                    "LoopOS backend %s uses plain http:// (%s); the guide requires HTTPS",
                    name,
                    urlsplit(url).hostname,
                )

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
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **s.header_values()}
        return httpx.AsyncClient(
            base_url=s.base_url,
            limits=limits,
            timeout=timeout,
            headers=headers,
            transport=self._transport,
            follow_redirects=False,
        )

    async def _attempt(
        self, path: str, payload: Mapping[str, Any], end: float | None
    ) -> httpx.Response:
        timeout: httpx.Timeout | None = None
        if end is not None:  # within a turn: no attempt outlives it
            left = end - time.monotonic()
            if left <= 0:
                raise httpx.ReadTimeout("no time left in the turn")
            limit = min(self.settings.timeout, left)
            timeout = httpx.Timeout(limit, connect=min(limit, 10.0))
        async with self._limit:
            # The least busy shard has a free connection: the permits bound the total.
            shard = min(range(len(self._clients)), key=self._in_flight.__getitem__)
            client = self._clients[shard]
            if client is None:
                client = self._clients[shard] = self._new_client()
            self._in_flight[shard] += 1
            started = time.monotonic()
            try:
                if timeout is None:
                    response = await client.post(path, json=payload)
                else:
                    response = await client.post(path, json=payload, timeout=timeout)
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
        """POST with the language fallback; see :meth:`_post_once`."""
        try:
            return await self._post_once(path, payload)
        except _LanguageRefused:
            language = payload.get("language")
            default = self.settings.language
            if not isinstance(language, str) or language == default:
                raise
            log.info("LoopOS refused language %r; using %r from now on", language, default)
            self._refused_languages.add(language)
            return await self._post_once(path, {**payload, "language": default})

    def _language(self, tag: str | None) -> str:
        code = loopos_language(tag, self.settings.language)
        return self.settings.language if code in self._refused_languages else code

    async def _post_once(self, path: str, payload: Mapping[str, Any]) -> Any:
        """POST with retries; return the parsed JSON or raise :class:`LoopOSError`."""
        end = deadline()
        if end is not None:
            end -= self.settings.deadline_reserve
        try:
            response = await self._policy.call(
                lambda: self._attempt(path, payload, end),
                _is_transient,
                deadline=end,
                min_attempt=min(1.0, self.settings.timeout),
            )
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
        if status == 422 and refuses_language(response):
            raise _LanguageRefused(refusal(path, response))
        if status >= 400:
            raise LoopOSError(refusal(path, response))
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
            "language": self._language(inbound.language),
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

    def _photos_too_large(self, images: Sequence[Image]) -> LoopOSError | None:
        """One request carries every photo as base64: bound their sum, not only each one."""
        total = sum(len(image.data) for image in images)
        limit = self.settings.max_request_image_bytes
        if total <= limit:
            return None
        return LoopOSError(
            Failure(
                FailureKind.BAD_INPUT,
                f"photos too large together ({total} > {limit} bytes)",
                reason=FailureReason.PHOTOS_TOO_LARGE,
                fields={"total": human_size(total), "limit": human_size(limit)},
            )
        )

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        too_large = self._photos_too_large(inbound.images)
        if too_large is not None:
            yield too_large.failure
            return
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
            raw = msgspec.convert(data, list[_ReplyMessage])  # text fields only: strict
        except msgspec.ValidationError as exc:
            raise LoopOSError(
                Failure(FailureKind.MALFORMED, f"/chat: not an array of messages ({exc})")
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
            "language": self._language(language),
            "prompt": prompt,
            "options": list(options),
            "item_context": item_context,
        }
        endpoint = "/loopos_ai_decision"
        data = await self._post(endpoint, payload)
        reply = _validated(_DecisionReply, endpoint, data)
        # "Validate responses": a decision is one of the options offered (as offered)
        offered = {option.strip().casefold(): option for option in options}
        chosen = offered.get(reply.decision.strip().casefold())
        if chosen is None:
            raise LoopOSError(
                Failure(FailureKind.MALFORMED, f"{endpoint}: the decision is not an offered option")
            )
        extra = {k: v for k, v in data.items() if k not in _DecisionReply.__struct_fields__}
        return Decision(chosen, reply.reasoning, extra)

    async def describe_listing(
        self, images: Sequence[Image], request: ListingRequest, language: str | None
    ) -> ListingDraft:
        """``/loopos_ai_c2c_descriptor``: photos + description -> listing. Raises LoopOSError."""
        if not images:
            raise LoopOSError(
                Failure(FailureKind.BAD_INPUT, "no photo", reason=FailureReason.NEEDS_PHOTO)
            )
        too_large = self._photos_too_large(images)
        if too_large is not None:
            raise too_large
        payload = {
            "language": self._language(language),
            "images": [image.data_url() for image in images],
            "loopos_core_context": self.settings.context,
            "agent_specific": {
                # What the seller named; empty ones are left for the server to infer from the
                # photos and the description.
                "category_name": request.category,
                "product_name": request.product,
                "brand_name": request.brand,
                "user_description": request.description,
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


_Reply = TypeVar("_Reply", bound=msgspec.Struct)


def _validated(model: type[_Reply], endpoint: str, data: Any) -> _Reply:
    """A typed service's reply, or :class:`LoopOSError` (MALFORMED) when its shape is wrong."""
    try:
        # strict=False: a number sent as a string ("12.50") is read, as before
        return msgspec.convert(data, model, strict=False)
    except msgspec.ValidationError as exc:
        raise LoopOSError(
            Failure(FailureKind.MALFORMED, f"{endpoint}: unexpected reply shape ({exc})")
        ) from exc
