"""Telegram's HTML parse mode as the Bot API server applies it, for the fake server.

Strict like the real server: an unsupported tag, an unknown named entity or an unbalanced tag is
a 400 "can't parse entities"; the visible text and the entities (UTF-16 offsets) come back.
"""

from __future__ import annotations

import html
import re
from typing import Any

TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)\s*(/?)>")
ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]*);")
ATTR_RE = re.compile(r"""([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}


class EntityParseError(Exception):
    """Maps to 400 "Bad Request: can't parse entities: ..."."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Return (visible text, entities) or raise :class:`EntityParseError`."""
    out: list[str] = []
    pos16 = 0  # UTF-16 length of the text emitted so far
    stack: list[tuple[str, int, dict[str, str]]] = []
    entities: list[dict[str, Any]] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "<":
            m = TAG_RE.match(source, i)
            offset = len(source[:i].encode("utf-8"))
            if m is None:
                raise EntityParseError(f'Unexpected "<" at byte offset {offset}')
            closing, name, attr_text, _ = m.groups()
            name = name.lower()
            if name not in TAG_TYPES:
                kind = "end" if closing else "start"
                raise EntityParseError(f'Unsupported {kind} tag "{name}" at byte offset {offset}')
            if closing:
                if not stack or stack[-1][0] != name:
                    expected = f'expected "</{stack[-1][0]}>", ' if stack else ""
                    raise EntityParseError(
                        f'Unmatched end tag at byte offset {offset}, {expected}found "</{name}>"'
                    )
                tag, start, attrs = stack.pop()
                if pos16 > start:
                    entities.append(_entity(tag, start, pos16 - start, attrs))
            else:
                attrs = {
                    a.lower(): (v1 or v2 or v3 or "")
                    for a, v1, v2, v3 in ATTR_RE.findall(attr_text or "")
                }
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise EntityParseError(f'Unsupported start tag "span" at byte offset {offset}')
                stack.append((name, pos16, attrs))
            i = m.end()
            continue
        if ch == "&":
            m = ENTITY_RE.match(source, i)
            if m is not None:
                ref = m.group(1)
                if ref.startswith("#"):
                    code = int(ref[2:], 16) if ref[1:2] in "xX" and len(ref) > 1 else int(ref[1:])
                    text = chr(code) if 0 < code < 0x110000 else "\ufffd"
                elif ref in NAMED_ENTITIES:
                    text = NAMED_ENTITIES[ref]
                else:
                    offset = len(source[:i].encode("utf-8"))
                    raise EntityParseError(
                        f'Unsupported HTML entity "&{ref};" at byte offset {offset}'
                    )
                out.append(text)
                pos16 += utf16_len(text)
                i = m.end()
                continue
        out.append(ch)
        pos16 += utf16_len(ch)
        i += 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _entity(tag: str, offset: int, length: int, attrs: dict[str, str]) -> dict[str, Any]:
    entity: dict[str, Any] = {"type": TAG_TYPES[tag], "offset": offset, "length": length}
    if tag == "a":
        entity["url"] = attrs.get("href", "")
    if tag == "pre" and attrs.get("language"):
        entity["language"] = attrs["language"]
    return entity


def strip_message(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The server trims leading/trailing whitespace of a message (entities follow)."""
    stripped = text.strip()
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    kept = []
    for e in entities:
        start = max(0, e["offset"] - lead)
        end = min(size, e["offset"] - lead + e["length"])
        if end > start:
            kept.append({**e, "offset": start, "length": end - start})
    return stripped, kept


def plain_entities(text: str, bot_username: str | None = None) -> list[dict[str, Any]]:
    """Entities the server attaches to a user's plain message: a leading command, @mentions."""
    entities: list[dict[str, Any]] = []
    m = re.match(r"/[a-zA-Z0-9_]{1,32}(@[a-zA-Z0-9_]{3,32})?", text)
    if m:
        entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(m.group(0))})
    for m in re.finditer(r"(?<![\w/])@[a-zA-Z0-9_]{3,32}", text):
        entities.append(
            {
                "type": "mention",
                "offset": utf16_len(text[: m.start()]),
                "length": utf16_len(m.group(0)),
            }
        )
    return entities


def escape(text: str) -> str:
    return html.escape(text, quote=False)
