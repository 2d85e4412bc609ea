"""``GET /init_session`` (chat tokens, language fallback, license errors) and the protocol.

HTTP goes through one aiohttp session per backend: aiohttp does not log request URLs, and the
``init_session`` URL carries the license key (httpx logs every URL at INFO). The same session
(unbounded connector, no cookie jar) carries the Socket.IO WebSockets of v0.2.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

import aiohttp

from chatbridge.core.backends.shopai.settings import ShopAISettings
from chatbridge.core.errors import BackendError
from chatbridge.core.retry import RetryPolicy
from chatbridge.core.types import Failure, FailureKind

__all__ = [
    "SessionInitializer",
    "ShopAIHttp",
    "WireProtocol",
    "base_language",
    "parse_supported_languages",
    "pick_language",
]

log = logging.getLogger(__name__)

# which of the two documents an instance speaks (not typing.Protocol)
WireProtocol = Literal["websocket", "socketio"]
_OTHER: dict[WireProtocol, WireProtocol] = {"websocket": "socketio", "socketio": "websocket"}

_SUPPORTED = re.compile(r"supported languages:\s*(\[[^\]]*\])", re.IGNORECASE)


def base_language(tag: str | None) -> str | None:
    """``"pt-BR"`` -> ``"pt"``, ``"en_US"`` -> ``"en"``; None for an empty tag."""
    if not tag:
        return None
    base = re.split(r"[-_]", tag.strip().lower(), maxsplit=1)[0]
    return base or None


def parse_supported_languages(message: str) -> list[str] | None:
    """The list in ``"Invalide language, supported languages: ['hu', 'en']"``, if any."""
    match = _SUPPORTED.search(message)
    if match is None:
        return None
    try:
        value = ast.literal_eval(match.group(1))  # a Python list literal, not JSON
    except (ValueError, SyntaxError):
        value = re.findall(r"[\"']([^\"']+)[\"']", match.group(1))
    if not isinstance(value, list):
        return None
    languages = [str(v).strip() for v in value if str(v).strip()]
    return languages or None


def pick_language(wanted: str | None, supported: Sequence[str], default: str) -> str:
    """The user's base language if supported, else the configured default, else the first."""
    by_base = {base_language(s): s for s in reversed(supported)}
    for candidate in (wanted, default):
        if candidate is None:
            continue
        if candidate in supported:
            return candidate
        match = by_base.get(base_language(candidate))
        if match is not None:
            return match
    return supported[0]


class _Transient(Exception):
    """A fault worth retrying (connection refused, timeout, 5xx)."""


class ShopAIHttp:
    """The backend's one aiohttp session, created on first use inside the running loop."""

    def __init__(self, settings: ShopAISettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(
                    total=self.settings.request_timeout,
                    sock_connect=self.settings.connect_timeout,
                ),
            )
        return self._session

    async def get_json(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        """``(status, body)``; body is None when it is not JSON. Raises _Transient."""
        url = f"{self.settings.base_url}{path}"
        try:
            async with self.session().get(url, params=params) as response:
                if response.status >= 500:
                    raise _Transient(f"HTTP {response.status}")
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                return response.status, body
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            # never the URL: it holds the license key
            raise _Transient(f"{type(exc).__name__} on {path}") from None
        except aiohttp.ClientError as exc:
            raise _Transient(f"{type(exc).__name__} on {path}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SessionInitializer:
    """Hands out chat tokens and knows which protocol the instance speaks."""

    def __init__(self, settings: ShopAISettings, http: ShopAIHttp, name: str = "shopai") -> None:
        self.settings = settings
        self.http = http
        self.name = name
        self.retry = RetryPolicy(
            attempts=settings.reconnect_attempts,
            base_delay=settings.reconnect_backoff,
            max_delay=settings.reconnect_backoff_max,
        )
        self._supported: list[str] | None = None  # learnt from an "invalid language" error
        self._auth_failed_until = 0.0
        self._auth_logged = False
        self._inits = asyncio.Semaphore(settings.max_concurrent_inits)
        self._protocol: WireProtocol | None = None  # only one a connection opened with

    def _auth_failure(self) -> BackendError:
        return BackendError(Failure(FailureKind.AUTH, "ShopAI rejected the license key"))

    async def init_session(self, language: str | None) -> tuple[str, str]:
        """A new ``(chat_token, language used)``; raises BackendError with a Failure."""
        if time.monotonic() < self._auth_failed_until:
            raise self._auth_failure()  # don't hammer the server with a key it refused
        default = self.settings.language
        wanted = base_language(language) or default
        lang = pick_language(wanted, self._supported, default) if self._supported else wanted
        tried: set[str] = set()
        while True:
            tried.add(lang)
            body = await self._request_init(lang)
            if not isinstance(body, dict):
                raise BackendError(
                    Failure(FailureKind.MALFORMED, "init_session: not a JSON object")
                )
            token = body.get("chat_token")
            if body.get("status") == "ok" and isinstance(token, str) and token:
                if self._auth_logged:
                    log.warning("ShopAI backend %s accepts the license key again", self.name)
                self._auth_logged = False
                return token, lang
            message = str(body.get("message", ""))
            supported = parse_supported_languages(message)
            if supported is not None:
                self._supported = supported
                fallback = pick_language(wanted, supported, default)
                if fallback not in tried:
                    log.info("ShopAI does not support %r; using %r", lang, fallback)
                    lang = fallback
                    continue
            if "license" in message.lower():
                self._auth_failed_until = time.monotonic() + self.settings.auth_failure_ttl
                if not self._auth_logged:
                    self._auth_logged = True
                    log.error(
                        "ShopAI backend %s (%s) rejected its license key: every new "
                        "conversation fails until backends.%s.license_key is fixed",
                        self.name,
                        self.settings.base_url,
                        self.name,
                    )
                raise self._auth_failure()
            detail = f"init_session refused: {message[:200]}"
            raise BackendError(Failure(FailureKind.UNAVAILABLE, detail))

    async def _request_init(self, lang: str) -> Any:
        params = {"license_key": self.settings.license_key.get_secret_value(), "lang": lang}

        async def once() -> Any:
            async with self._inits:
                return (await self.http.get_json("/init_session", params))[1]

        try:
            return await self.retry.call(once, lambda e: isinstance(e, _Transient))
        except _Transient as exc:
            raise BackendError(Failure(FailureKind.UNAVAILABLE, str(exc), retryable=True)) from None

    async def protocols(self) -> tuple[WireProtocol, ...]:
        """The protocols to try, in order: the configured one, the one that worked, or a guess.

        v0.2 documents the version response (``{"status": "ok", "version": "v0.2"}``) but not
        its path: ``GET /version`` is asked, and whatever it says, the other protocol's
        handshake is the fallback when the first fails. Nothing is cached until a connection
        opened (see :meth:`confirm`).
        """
        if self.settings.protocol != "auto":
            return (self.settings.protocol,)
        if self._protocol is not None:
            return (self._protocol,)
        try:
            status, body = await self.http.get_json("/version", {})
        except _Transient as exc:
            # a 5xx or no answer on a path the document never gave: the handshakes decide
            log.debug("ShopAI version check failed (%s); trying both handshakes", exc)
            status, body = 0, None
        version = body.get("version") if isinstance(body, dict) else None
        first: WireProtocol = "socketio" if status == 200 and version == "v0.2" else "websocket"
        if status == 200 and version not in (None, "v0.1", "v0.2"):
            log.warning("ShopAI reports version %r; trying the v0.1 WebSocket first", version)
        return (first, _OTHER[first])

    def confirm(self, protocol: WireProtocol) -> None:
        """A connection opened with ``protocol``: use it from now on."""
        if self._protocol != protocol and self.settings.protocol == "auto":
            log.info("ShopAI %s speaks %s", self.settings.base_url, protocol)
            self._protocol = protocol
