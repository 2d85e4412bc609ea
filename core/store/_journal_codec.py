"""How journal entries are written as text: the same JSON in every store.

Images travel as base64 (a journal entry must be able to run the turn again after a crash,
photos included). The format carries a version so that a later change can still read entries
a crash left behind.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from chatbridge.core import richtext
from chatbridge.core.types import Button, ConversationKey, Image, Inbound, Link, ReplyMessage

FORMAT = 1


def dump_key(key: ConversationKey) -> list[str | None]:
    return [key.bot, key.platform, key.chat_id, key.user_id, key.thread_id]


def load_key(data: Sequence[str | None]) -> ConversationKey:
    bot, platform, chat_id, user_id, thread_id = data
    assert bot is not None and platform is not None and chat_id is not None
    assert user_id is not None
    return ConversationKey(bot, platform, chat_id, user_id, thread_id)


def dump_inbound(inbound: Inbound) -> str:
    data: dict[str, Any] = {
        "v": FORMAT,
        "key": dump_key(inbound.key),
        "text": inbound.text,
    }
    if inbound.images:
        data["images"] = [
            [img.mime_type, base64.b64encode(img.data).decode("ascii")] for img in inbound.images
        ]
    if inbound.button_payload is not None:
        data["button"] = inbound.button_payload
    if inbound.language is not None:
        data["lang"] = inbound.language
    if inbound.message_id is not None:
        data["msg"] = inbound.message_id
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def load_inbound(text: str) -> Inbound:
    data = json.loads(text)
    return Inbound(
        key=load_key(data["key"]),
        text=data.get("text", ""),
        images=tuple(
            Image(data=base64.b64decode(b64), mime_type=mime)
            for mime, b64 in data.get("images", ())
        ),
        button_payload=data.get("button"),
        language=data.get("lang"),
        message_id=data.get("msg"),
    )


def _dump_button(button: Button) -> list[str | None]:
    return [button.label, button.payload, button.url, button.id]


def _load_button(data: Sequence[str | None]) -> Button:
    label, payload, url, *rest = data
    assert label is not None
    return Button(label, payload, url, id=rest[0] if rest else None)


def dump_answer(messages: Sequence[ReplyMessage]) -> str:
    out = []
    for m in messages:
        item: dict[str, Any] = {"text": m.text, "body": richtext.to_json(m.body)}
        if m.buttons:
            item["buttons"] = [_dump_button(b) for b in m.buttons]
        if m.links:
            item["links"] = [[link.label, link.url] for link in m.links]
        out.append(item)
    return json.dumps({"v": FORMAT, "messages": out}, ensure_ascii=False, separators=(",", ":"))


def load_answer(text: str) -> tuple[ReplyMessage, ...]:
    """Answers as written; one written before the neutral rich text (an ``html``, no
    ``body``) comes back as its plain text."""
    data = json.loads(text)
    return tuple(
        ReplyMessage(
            text=item["text"],
            buttons=tuple(_load_button(b) for b in item.get("buttons", ())),
            links=tuple(Link(label, url) for label, url in item.get("links", ())),
            body=richtext.from_json(item.get("body", ())),
        )
        for item in data["messages"]
    )
