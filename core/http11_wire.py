"""What the HTTP/1.1 client (:mod:`chatbridge.core.http11`) puts on the wire and reads back:
request bodies (a form, a multipart upload) and the response parser, which takes bytes as
they arrive and says when a response is complete. No I/O here."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import IO
from urllib.parse import urlencode

__all__ = [
    "MAX_HEAD",
    "ConnectFailed",
    "HttpError",
    "HttpTimeout",
    "Malformed",
    "ResponseParser",
    "encode_form",
    "encode_multipart",
]

MAX_HEAD = 64 * 1024  # status line + headers (and a chunked body's trailers) of one response
MAX_CHUNK_LINE = 1024
# multipart names and filenames, encoded as browsers (HTML5) and httpx do
_FORM_ESCAPES = {'"': "%22", "\\": "\\\\"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}
_FORM_ESCAPE_RE = re.compile("|".join(re.escape(c) for c in _FORM_ESCAPES))

FileField = tuple[str, bytes | IO[bytes], str]  # (filename, content, mimetype)


class HttpError(Exception):
    """The request failed: no connection, a connection lost, a response it cannot read.
    The message names what went wrong, never the URL."""


class HttpTimeout(HttpError):
    """Connecting, sending or reading took longer than its timeout; ``phase`` says which
    (``connect``, ``write``, ``read``)."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class ConnectFailed(HttpError):
    """No connection: refused, unreachable, a name that does not resolve, TLS refused."""


class Malformed(HttpError):
    """The server's response is not HTTP/1.1 this client can read."""


# --- request bodies ---------------------------------------------------------------------------


def encode_form(fields: Mapping[str, str]) -> tuple[bytes, str]:
    """``application/x-www-form-urlencoded``, as httpx sends a dict of fields."""
    return urlencode(fields).encode("ascii"), "application/x-www-form-urlencoded"


def _form_param(name: str, value: str) -> str:
    return f'{name}="{_FORM_ESCAPE_RE.sub(lambda m: _FORM_ESCAPES[m.group(0)], value)}"'


def encode_multipart(
    fields: Mapping[str, str], files: Mapping[str, FileField], boundary: str | None = None
) -> tuple[bytes, str]:
    """``multipart/form-data``: the fields, then the files, byte for byte as httpx sends them
    (one part per name, quoted as HTML5 forms quote, a random 32-hex-digit boundary)."""
    mark = (boundary or os.urandom(16).hex()).encode("ascii")
    parts: list[bytes] = []
    for name, value in fields.items():
        disposition = f"Content-Disposition: form-data; {_form_param('name', name)}\r\n\r\n"
        parts += [b"--", mark, b"\r\n", disposition.encode(), value.encode(), b"\r\n"]
    for name, (filename, content, mimetype) in files.items():
        head = f"Content-Disposition: form-data; {_form_param('name', name)}"
        if filename:
            head += f"; {_form_param('filename', filename)}"
        head += f"\r\nContent-Type: {mimetype}\r\n\r\n"
        data = content if isinstance(content, bytes) else _read_all(content)
        parts += [b"--", mark, b"\r\n", head.encode(), data, b"\r\n"]
    parts += [b"--", mark, b"--\r\n"]
    return b"".join(parts), f"multipart/form-data; boundary={mark.decode()}"


def _read_all(stream: IO[bytes]) -> bytes:
    if stream.seekable():
        stream.seek(0)
    return stream.read()


# --- the response parser ----------------------------------------------------------------------


class ResponseParser:
    """Parses one response from bytes as they arrive; :meth:`feed` says when it is complete."""

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_done",
        "_length",
        "_mode",
        "_parts",
        "_scanned",
        "_trailer",
        "body",
        "decoded_only",
        "headers",
        "keep_alive",
        "status",
    )

    def __init__(self, *, decoded_only: bool = True) -> None:
        # decoded_only: a body in a content coding (gzip...) is an error, the client having
        # asked for identity; otherwise the caller decodes it
        self.decoded_only = decoded_only
        self._buf = bytearray()
        self._scanned = 0  # how far the head has been searched for its end
        self._mode = "head"  # head, length, chunked, close
        self._length = 0
        self._chunk_left = -1  # -1: a chunk-size line is next; -2: the CRLF after a chunk
        self._trailer = False
        self._done = False
        self._parts: list[bytes] = []
        self.status = 0
        self.keep_alive = False
        self.body = b""
        self.headers: list[tuple[bytes, bytes]] = []  # as received (names in their case)

    def feed(self, data: bytes) -> bool:
        self._buf += data
        if self._mode == "head" and not self._head():
            return False
        if self._mode == "length":
            if len(self._buf) < self._length:
                return False
            if len(self._buf) > self._length:
                self.keep_alive = False  # bytes nobody asked for: never reuse this connection
            self.body = bytes(self._buf[: self._length])
            return True
        if self._mode == "chunked":
            return self._chunks()
        return False  # "close": the body ends with the connection

    def feed_eof(self) -> bool:
        """The server closed the connection: complete when the body was read-to-close."""
        if self._mode != "close":
            return False
        self.body = bytes(self._buf)
        return True

    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise Malformed("the response head too large")
            self._scanned = len(self._buf)
            return False
        if end > MAX_HEAD:
            raise Malformed("the response head too large")
        lines = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        self._scanned = 0
        version, status = _status_line(lines[0])
        if 100 <= status < 200:
            if status == 101:
                raise Malformed("the server switched protocols")
            return self._head()  # an interim response (100 Continue...): the real one follows
        self.status = status
        merged, self.headers = _headers(lines[1:])
        self._start_body(version, status, merged)
        return True

    def _start_body(self, version: bytes, status: int, headers: dict[bytes, bytes]) -> None:
        tokens = {t.strip().lower() for t in headers.get(b"connection", b"").split(b",")}
        if version == b"HTTP/1.1":
            self.keep_alive = b"close" not in tokens
        else:
            self.keep_alive = b"keep-alive" in tokens
        coding = headers.get(b"content-encoding", b"identity").strip().lower()
        if self.decoded_only and coding not in (b"identity", b""):
            raise Malformed("the response is compressed though identity was asked for")
        transfer = headers.get(b"transfer-encoding")
        length = headers.get(b"content-length")
        if status in (204, 304):
            self._mode, self._length = "length", 0
        elif transfer is not None:
            codings = [c.strip().lower() for c in transfer.split(b",")]
            if codings[-1] == b"chunked":
                self._mode = "chunked"
            else:
                self._mode, self.keep_alive = "close", False
            if length is not None:  # both: a smuggling shape; read it, never reuse
                self.keep_alive = False
        elif length is not None:
            if not length.isdigit():
                raise Malformed("the response has a bad Content-Length")
            self._mode, self._length = "length", int(length)
        else:
            self._mode, self.keep_alive = "close", False

    def _chunks(self) -> bool:
        buf, pos = self._buf, 0
        try:
            while not self._done:
                if self._trailer:
                    step = self._trailer_line(buf, pos)
                elif self._chunk_left == -1:
                    step = self._size_line(buf, pos)
                elif self._chunk_left == -2:
                    step = self._chunk_end(buf, pos)
                else:
                    step = self._chunk_data(buf, pos)
                if step is None:
                    return False
                pos = step
            return True
        finally:
            del buf[:pos]

    # each step reads from ``pos`` and returns where the next starts, or None for more bytes
    def _size_line(self, buf: bytearray, pos: int) -> int | None:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_CHUNK_LINE:
                raise Malformed("a chunk size line too long")
            return None
        size = bytes(buf[pos:end]).split(b";", 1)[0].strip()
        if not size or size.strip(b"0123456789abcdefABCDEF"):
            raise Malformed("the response has a bad chunk size")
        self._chunk_left = int(size, 16)
        if self._chunk_left == 0:
            self._trailer = True
        return end + 2

    def _chunk_data(self, buf: bytearray, pos: int) -> int | None:
        take = min(self._chunk_left, len(buf) - pos)
        if take == 0:
            return None
        self._parts.append(bytes(buf[pos : pos + take]))
        self._chunk_left -= take
        if self._chunk_left == 0:
            self._chunk_left = -2
        return pos + take

    def _chunk_end(self, buf: bytearray, pos: int) -> int | None:
        if len(buf) - pos < 2:
            return None
        if buf[pos : pos + 2] != b"\r\n":
            raise Malformed("a chunk not followed by CRLF")
        self._chunk_left = -1
        return pos + 2

    def _trailer_line(self, buf: bytearray, pos: int) -> int | None:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_HEAD:
                raise Malformed("the response trailers too large")
            return None
        if end == pos:  # the empty line: the message is complete
            if end + 2 < len(buf):
                self.keep_alive = False  # bytes nobody asked for
            self.body = b"".join(self._parts)
            self._done = True
        return end + 2


def _status_line(line: bytes) -> tuple[bytes, int]:
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if (
        version not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(code) != 3
        or not code.isdigit()
        or rest[3:4] not in (b"", b" ")
        or not 100 <= int(code) <= 599
    ):
        raise Malformed("the response has a bad status line")
    return version, int(code)


def _headers(lines: list[bytes]) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    """(values by lower-case name, repeated names joined; the lines as received)"""
    headers: dict[bytes, bytes] = {}
    raw: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise Malformed("the response has a malformed header line")
        key = name.lower()
        value = value.strip()
        raw.append((name, value))
        if key == b"content-length" and headers.get(key, value) != value:
            raise Malformed("the response has two different Content-Lengths")
        if key in headers and key != b"content-length":
            headers[key] += b", " + value
        else:
            headers[key] = value
    return headers, raw
