"""An httpx transport on :class:`~chatbridge.core.http11.Http11Client`.

A client built with it (``httpx.AsyncClient(transport=Http11Transport())``) keeps httpx's API
(requests, responses, errors, content decoding) without httpx's own connection machinery:
httpcore, anyio, h11 and a TLS context are never loaded (5.9 MiB on top of ``import httpx``),
and no pool rescans its queue on each change. The LoopOS backend gets it from the runner.

Limits of the client it wraps apply: no proxies, no HTTP/2; httpx's ``Limits`` do not apply
(the caller bounds the requests in flight, ``max_idle`` the idle connections kept).
"""

from __future__ import annotations

import ssl

import httpx

from chatbridge.core.http11 import ConnectFailed, Http11Client, HttpError, HttpTimeout

_TIMEOUTS: dict[str, type[httpx.TimeoutException]] = {
    "connect": httpx.ConnectTimeout,
    "write": httpx.WriteTimeout,
    "read": httpx.ReadTimeout,
}


class Http11Transport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_idle: int = 64, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max_idle = max_idle
        self._ssl_context = ssl_context
        self._client = self._new_client()

    def _new_client(self) -> Http11Client:
        # the User-Agent is httpx's (the request's headers go out as they are)
        return Http11Client(user_agent="", max_idle=self._max_idle, ssl_context=self._ssl_context)

    @property
    def client(self) -> Http11Client:
        return self._client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            response = await self._client.send(
                request.method,
                str(request.url),
                body if body or request.method != "GET" else None,
                list(request.headers.raw),
                connect_timeout=timeouts.get("connect"),
                read_timeout=timeouts.get("read"),
                write_timeout=timeouts.get("write"),
                decoded_only=False,  # httpx decodes gzip and friends itself
            )
        except HttpTimeout as exc:
            raise _TIMEOUTS.get(exc.phase, httpx.ReadTimeout)(str(exc), request=request) from None
        except ConnectFailed as exc:
            raise httpx.ConnectError(str(exc), request=request) from None
        except HttpError as exc:  # lost mid-exchange, or an answer that is not HTTP/1.1
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=httpx.ByteStream(response.body),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        # Closes the connections. The transport stays usable, as an httpx client is not: a
        # backend's several clients share it, and a backend is usable again after aclose().
        closing, self._client = self._client, self._new_client()
        await closing.close()
