"""The neutral rich text core hands to adapters: a small, typed markup with no backend in it.

A message body is a tuple of blocks:

- :class:`Paragraph` — inline runs (:class:`Span`); a ``"\\n"`` inside a span is a line break;
- :class:`ListBlock` — list items (bulleted or numbered, nested by ``depth``);
- :class:`CodeBlock` — preformatted text, shown as is.

A :class:`Span` is a run of text with its emphasis (bold, italic, inline code) and, when it is
a link, its URL (only ``http``, ``https``, ``tg`` and ``mailto`` ever get here). Buttons are
never part of the body: core takes them out before an adapter sees the message.

Adapters render a body with :func:`render` and a :class:`Dialect` (how their platform writes
bold, links, lists, and escapes text); there is one walk over the markup for every platform.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Block",
    "CodeBlock",
    "Dialect",
    "ListBlock",
    "ListItem",
    "Paragraph",
    "RichText",
    "Span",
    "from_json",
    "from_plain",
    "plain_text",
    "render",
    "to_json",
]


@dataclass(frozen=True, slots=True)
class Span:
    """A run of text with one style; ``url`` makes it a link."""

    text: str
    bold: bool = False
    italic: bool = False
    code: bool = False
    url: str | None = None

    def same_style(self, other: Span) -> bool:
        return (self.bold, self.italic, self.code, self.url) == (
            other.bold,
            other.italic,
            other.code,
            other.url,
        )


Inline = tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Paragraph:
    spans: Inline


@dataclass(frozen=True, slots=True)
class ListItem:
    spans: Inline
    depth: int = 0  # 0 = top level; nested lists are flattened with their depth
    number: int | None = None  # None = a bullet, else the item's number in an ordered list


@dataclass(frozen=True, slots=True)
class ListBlock:
    items: tuple[ListItem, ...]


@dataclass(frozen=True, slots=True)
class CodeBlock:
    text: str


Block = Paragraph | ListBlock | CodeBlock
RichText = tuple[Block, ...]

_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")


def from_plain(text: str) -> RichText:
    """Plain text as paragraphs (blank lines separate them; single newlines are line breaks)."""
    out: list[Block] = []
    for chunk in _BLANK_LINES.split(text.strip()):
        chunk = "\n".join(line.strip() for line in chunk.split("\n")).strip()
        if chunk:
            out.append(Paragraph((Span(chunk),)))
    return tuple(out)


# --- rendering -------------------------------------------------------------------------------


def _identity(text: str) -> str:
    return text


def _plain_link(label: str, url: str) -> str:
    return label


def _fence(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one platform writes the markup. Markers wrap already-escaped text."""

    escape: Callable[[str], str] = _identity
    escape_code: Callable[[str], str] = _identity
    bold: tuple[str, str] = ("", "")
    italic: tuple[str, str] = ("", "")
    code: tuple[str, str] = ("", "")
    link: Callable[[str, str], str] = _plain_link  # (rendered label, url) -> text
    code_block: Callable[[str], str] = _fence  # raw code -> text
    bullet: str = "• "
    indent: str = "  "
    # written between two runs whose markers would touch ("**a***b*" is ambiguous Markdown)
    joiner: str = ""


PLAIN = Dialect()


def _run(text: str, span: Span, dialect: Dialect) -> str:
    # markers hug the words ("**bold **" is not bold in Markdown): spaces stay outside
    core = text.strip()
    if not core:
        return dialect.escape(text)
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(lead) + len(core) :]
    if span.code:
        out = dialect.code[0] + dialect.escape_code(core) + dialect.code[1]
    else:
        out = dialect.escape(core)
    if span.italic:
        out = dialect.italic[0] + out + dialect.italic[1]
    if span.bold:
        out = dialect.bold[0] + out + dialect.bold[1]
    return dialect.escape(lead) + out + dialect.escape(trail)


def _styled(span: Span, dialect: Dialect) -> str:
    # markers never cross a line break
    return "\n".join(_run(line, span, dialect) for line in span.text.split("\n"))


def _marked(span: Span) -> bool:
    return span.bold or span.italic or span.code or span.url is not None


def _inline(spans: Iterable[Span], dialect: Dialect) -> str:
    """Spans in ``dialect``; neighbouring spans of one link make one link."""
    parts: list[str] = []
    link: list[str] = []
    url: str | None = None
    previous: Span | None = None
    for span in spans:
        if span.url != url and url is not None:
            parts.append(_link(link, url, dialect))
            link = []
        if (
            dialect.joiner
            and previous is not None
            and _marked(previous)
            and _marked(span)
            and previous.text[-1:].strip()
            and span.text[:1].strip()
            and (span.url is None or span.url != previous.url)
        ):
            parts.append(dialect.joiner)
        url = span.url
        if span.text:
            (link if url is not None else parts).append(_styled(span, dialect))
            previous = span
    if url is not None:
        parts.append(_link(link, url, dialect))
    return "".join(parts)


def _link(label: list[str], url: str, dialect: Dialect) -> str:
    text = "".join(label)
    core = text.strip()
    if not core:
        return text
    lead = text[: len(text) - len(text.lstrip())]
    return lead + dialect.link(core, url) + text[len(lead) + len(core) :]


def render(body: RichText, dialect: Dialect = PLAIN) -> str:
    """The body in ``dialect``: blocks separated by a blank line, list items by a newline."""
    out: list[str] = []
    for block in body:
        if isinstance(block, Paragraph):
            text = _inline(block.spans, dialect)
        elif isinstance(block, ListBlock):
            lines = []
            for item in block.items:
                marker = dialect.bullet if item.number is None else f"{item.number}. "
                lines.append(dialect.indent * item.depth + marker + _inline(item.spans, dialect))
            text = "\n".join(lines)
        else:
            text = dialect.code_block(block.text)
        if text.strip():
            out.append(text)
    return "\n\n".join(out)


def plain_text(body: RichText) -> str:
    """What the body reads as without formatting (logs, the console, text-only fallbacks)."""
    return render(body, PLAIN)


# --- a JSON form, for whatever stores an answer before it is sent -----------------------------


def _span_json(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {"t": span.text}
    for name in ("bold", "italic", "code"):
        if getattr(span, name):
            out[name[0]] = 1
    if span.url is not None:
        out["u"] = span.url
    return out


def _span_from(data: Mapping[str, Any]) -> Span:
    return Span(
        str(data["t"]),
        bold=bool(data.get("b")),
        italic=bool(data.get("i")),
        code=bool(data.get("c")),
        url=None if data.get("u") is None else str(data["u"]),
    )


def to_json(body: RichText) -> list[dict[str, Any]]:
    """A JSON-able form of ``body`` that :func:`from_json` reads back unchanged."""
    out: list[dict[str, Any]] = []
    for block in body:
        if isinstance(block, Paragraph):
            out.append({"p": [_span_json(s) for s in block.spans]})
        elif isinstance(block, ListBlock):
            items = [
                {"s": [_span_json(s) for s in i.spans], "d": i.depth, "n": i.number}
                for i in block.items
            ]
            out.append({"l": items})
        else:
            out.append({"c": block.text})
    return out


def from_json(data: Iterable[Mapping[str, Any]]) -> RichText:
    blocks: list[Block] = []
    for block in data:
        if "p" in block:
            blocks.append(Paragraph(tuple(_span_from(s) for s in block["p"])))
        elif "l" in block:
            items = tuple(
                ListItem(
                    tuple(_span_from(s) for s in item["s"]),
                    depth=int(item.get("d") or 0),
                    number=None if item.get("n") is None else int(item["n"]),
                )
                for item in block["l"]
            )
            blocks.append(ListBlock(items))
        elif "c" in block:
            blocks.append(CodeBlock(str(block["c"])))
    return tuple(blocks)
