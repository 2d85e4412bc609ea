"""Discord payload shapes and checks shared by the fake server and its user actions."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
MANAGE_GUILD = 1 << 5
MESSAGE_CONTENT = 1 << 15  # gateway intent bit
# View channel, send messages (+ in threads), embed, attach, read history, use app commands,
# create public threads: what a normal member and the bot need.
BASIC_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
BASIC_PERMISSIONS |= (1 << 35) | (1 << 38)

JSON = dict[str, Any]


@dataclass
class RestCall:
    """One REST request the fake received."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    body: Any  # decoded JSON (or the payload_json part of a multipart body), else None
    status: int = 0
    at: float = field(default_factory=time.monotonic)

    def match(self, method: str | None = None, path: str | None = None) -> bool:
        if method is not None and self.method != method:
            return False
        return path is None or re.fullmatch(path, self.path) is not None


@dataclass(frozen=True)
class FakeUser:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
            "bot": self.bot,
        }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return web.Response(status=status, body=json.dumps(data).encode(), headers=hdrs)


def _form_error(field_name: str, message: str) -> web.Response:
    body = {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {field_name: {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH", "message": message}]}},
    }
    return _json(body, 400)


def check_message_payload(body: JSON) -> str | None:
    """The limits Discord enforces on a message body; an error text, or None when valid."""
    content = body.get("content")
    if content is not None and len(content) > 2000:
        return f"content: Must be 2000 or fewer in length ({len(content)})"
    rows = body.get("components")
    if not rows:
        return None
    if len(rows) > 5:
        return f"components: Must be 5 or fewer in length ({len(rows)})"
    total = 0
    for r, row in enumerate(rows):
        children = row.get("components", [])
        if row.get("type") != 1 or not 1 <= len(children) <= 5:
            return f"components.{r}: an action row holds 1..5 components"
        for c, comp in enumerate(children):
            total += 1
            where = f"components.{r}.components.{c}"
            if comp.get("type") != 2:
                continue
            if len(comp.get("label") or "") > 80:
                return f"{where}.label: Must be 80 or fewer in length"
            if comp.get("style") == 5:
                url = comp.get("url") or ""
                if not url or len(url) > 512 or "custom_id" in comp:
                    return f"{where}.url: a link button has a url of 1..512 and no custom_id"
            else:
                cid = comp.get("custom_id") or ""
                if not 1 <= len(cid) <= 100:
                    return f"{where}.custom_id: Must be between 1 and 100 in length"
    if total > 25:
        return "components: at most 25 components"
    return None


def history_page(
    messages: Iterable[JSON], channel_id: int, query: Mapping[str, str]
) -> web.Response:
    """GET /channels/{id}/messages: ``limit`` (1-100, default 50) messages around the
    ``after`` or ``before`` id (one of them), newest first, as Discord sends them."""
    limit = int(query.get("limit", "50"))
    if not 1 <= limit <= 100 or ("after" in query and "before" in query):
        return _form_error("limit", "invalid history query")
    mine = sorted(
        (m for m in messages if m["channel_id"] == str(channel_id)), key=lambda m: int(m["id"])
    )
    if "after" in query:
        picked = [m for m in mine if int(m["id"]) > int(query["after"])][:limit]
    else:
        before = int(query.get("before", str(2**63)))
        picked = [m for m in mine if int(m["id"]) < before][-limit:]
    return _json(list(reversed(picked)))
