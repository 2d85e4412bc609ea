"""What a LoopOS HTTP refusal means: FastAPI's 422 bodies, ``Retry-After``, and the
:class:`core.types.Failure` (kind, reason, structured fields, never a sentence) each 4xx becomes.
"""

from __future__ import annotations

from typing import Any

import httpx

from chatbridge.core.types import Failure, FailureKind, FailureReason


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("detail") if isinstance(body, dict) else None


def refuses_language(response: httpx.Response) -> bool:
    """Whether a FastAPI 422 body names the ``language`` field."""
    detail = _detail(response)
    if not isinstance(detail, list):
        return False
    return any(isinstance(item, dict) and "language" in item.get("loc", []) for item in detail)


def validation_text(response: httpx.Response) -> str:
    """A short plain reading of a FastAPI 422 body ("Field required (messages)"), for logs."""
    detail = _detail(response)
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


def refused_fields(response: httpx.Response) -> list[str]:
    """The names of the fields a FastAPI 422 body refuses (``messages.0.text`` -> ``text``),
    in order, once each: what the user is told, in no language in particular."""
    detail = _detail(response)
    names: list[str] = []
    if isinstance(detail, list):
        for item in detail:
            loc = item.get("loc", []) if isinstance(item, dict) else []
            named = [str(p) for p in loc if isinstance(p, str) and p != "body"]
            if named and named[-1] not in names:
                names.append(named[-1])
    return names


def retry_after(response: httpx.Response) -> int | None:
    """The seconds of a ``Retry-After: 30`` header (the date form is not worth parsing)."""
    value = response.headers.get("retry-after", "").strip()
    return max(1, int(value)) if value.isdigit() else None


def refusal(path: str, response: httpx.Response) -> Failure:
    """The Failure for an HTTP 4xx answer: its kind, reason and structured fields."""
    status = response.status_code
    where = f"{path}: HTTP {status}"
    if status == 422:
        names = refused_fields(response)
        detail = f"{path}: 422 {validation_text(response)}"
        if not names:
            return Failure(FailureKind.VALIDATION, detail, fields={"status": status})
        fields = {"status": status, "fields": ", ".join(names)}
        return Failure(FailureKind.VALIDATION, detail, reason=FailureReason.REJECTED, fields=fields)
    if status in (401, 403):
        return Failure(FailureKind.AUTH, where, fields={"status": status})
    if status == 413:
        return Failure(
            FailureKind.BAD_INPUT, where, reason=FailureReason.TOO_LARGE, fields={"status": status}
        )
    if status == 429:
        seconds = retry_after(response)
        if seconds is None:
            return Failure(FailureKind.UNAVAILABLE, where, True, fields={"status": status})
        return Failure(
            FailureKind.UNAVAILABLE,
            where,
            True,
            reason=FailureReason.BUSY,
            fields={"status": status, "seconds": seconds},
        )
    return Failure(FailureKind.UNAVAILABLE, where, fields={"status": status})
