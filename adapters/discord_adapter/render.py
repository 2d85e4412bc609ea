"""Text for Discord: backend HTML -> Discord Markdown, and Markdown-safe 2000-char splitting.

Pure functions (no discord.py), unit-tested on their own.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

from chatbridge.core.html import BUTTON_CLASSES
from chatbridge.core.textsplit import grapheme_boundary
from chatbridge.core.types import ReplyMessage

__all__ = [
    "MAX_CONTENT",
    "cut_label",
    "html_to_markdown",
    "message_markdown",
    "split_markdown",
]

MAX_CONTENT = 2000  # Discord's limit on a message's content
MAX_LABEL = 80  # ... on a button label

# The tags Discord Markdown can show; everything else is reduced to its text.
_CONVERT = ["b", "strong", "i", "em", "a", "ul", "ol", "li", "code", "pre", "p", "br"]
_DROP = ("script", "style", "head", "template", "noscript", "iframe", "svg")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BLOCKS = (
    "div", "section", "article", "header", "footer", "main", "nav", "aside", "table", "tr",
    "blockquote", "dl", "dt", "dd", "figure", "figcaption", "form", "fieldset", "hr",
)  # fmt: skip
_SAFE_LINK_SCHEMES = ("http", "https", "mailto")
_MANY_NEWLINES = re.compile(r"\n{3,}")


class _DiscordConverter(MarkdownConverter):
    """markdownify with Discord's dialect: ``**bold**``, ``*italics*``, ``-`` bullets."""

    def __init__(self) -> None:
        super().__init__(
            convert=_CONVERT,
            strong_em_symbol="*",
            bullets="-",
            escape_underscores=False,  # product names with underscores are common in shops
            escape_misc=False,
            code_language="",
        )


def _is_button(tag: Tag) -> bool:
    classes: Any = tag.get("class") or []
    names = set(classes.split() if isinstance(classes, str) else classes)
    return tag.name == "button" or bool(names & BUTTON_CLASSES)


def html_to_markdown(html: str) -> str:
    """Backend HTML as Discord Markdown; buttons (rendered as components) are left out."""
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for tag in soup.find_all(lambda t: isinstance(t, Tag) and _is_button(t)):
        if isinstance(tag, Tag) and not tag.decomposed:
            tag.decompose()
    # Blocks Discord cannot show become paragraphs (their text on its own lines); headings
    # keep some weight as bold; table cells stay apart.
    for tag in soup.find_all(_HEADINGS):
        if isinstance(tag, Tag):
            tag.name = "p"
            tag.wrap(soup.new_tag("b"))
    for tag in soup.find_all(_BLOCKS):
        if isinstance(tag, Tag):
            tag.name = "p"
    for tag in soup.find_all(("td", "th")):
        if isinstance(tag, Tag):
            tag.append(" ")
    for tag in soup.find_all("a"):
        if not isinstance(tag, Tag):
            continue
        href = tag.get("href")
        scheme = urlsplit(href).scheme.lower() if isinstance(href, str) else ""
        if scheme not in _SAFE_LINK_SCHEMES:
            tag.unwrap()  # javascript: and friends become plain text
    text = _DiscordConverter().convert_soup(soup)
    lines = [line.rstrip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def message_markdown(message: ReplyMessage) -> str:
    """What to show for one backend message: its HTML rendered, else its plain text."""
    if message.html:
        try:
            rendered = html_to_markdown(message.html)
        except Exception:  # untrusted markup never breaks a turn; the plain text is there
            rendered = ""
        if rendered:
            return rendered
    return message.text.strip()


def cut_label(label: str, limit: int = MAX_LABEL) -> str:
    """A button label Discord accepts (1..80 chars), cut with an ellipsis when longer."""
    label = " ".join(label.split()) or "…"
    if len(label) <= limit:
        return label
    return label[: grapheme_boundary(label, limit - 1)].rstrip() + "…"


# --- splitting -----------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*```([^\s`]*)", re.MULTILINE)
# Room kept in every piece for the markers that close what the piece leaves open:
# "\n```" + "`" + "**" (+ slack).
_RESERVE = 10


def _cut_point(text: str, limit: int) -> int:
    """Where to end a piece of at most ``limit`` chars: a boundary, never inside a character."""
    if len(text) <= limit:
        return len(text)
    window = limit // 2
    for sep in ("\n\n", "\n", " "):
        pos = text.rfind(sep, window, limit)
        if pos > 0:
            return pos
    return grapheme_boundary(text, limit)


def _open_state(piece: str, fence_lang: str | None) -> tuple[str | None, bool, bool]:
    """After ``piece`` (which starts inside a fence when ``fence_lang`` is not None): the
    open fence's language (None = no open fence), and whether inline code / bold are open."""
    in_fence = fence_lang
    inline = bold = False
    pos = 0
    for match in _FENCE.finditer(piece):
        if in_fence is None:
            inline, bold = _inline_state(piece[pos : match.start()], inline, bold)
            in_fence = match.group(1)
        else:
            in_fence = None
        pos = match.end()
        line_end = piece.find("\n", pos)
        pos = len(piece) if line_end < 0 else line_end
    if in_fence is None:
        inline, bold = _inline_state(piece[pos:], inline, bold)
    return in_fence, inline, bold


def _inline_state(text: str, inline: bool, bold: bool) -> tuple[bool, bool]:
    i = 0
    while i < len(text):
        if text[i] == "`":
            inline = not inline
            i += 1
        elif not inline and text.startswith("**", i):
            bold = not bold
            i += 2
        elif text[i] == "\\":
            i += 2
        else:
            i += 1
    return inline, bold


def split_markdown(text: str, max_len: int = MAX_CONTENT) -> list[str]:
    """Cut ``text`` into messages of at most ``max_len`` chars without breaking Markdown.

    A code fence, inline code or ``**bold**`` left open at a cut is closed at the end of the
    piece and reopened (same language) at the start of the next; cuts prefer paragraph, line
    and word boundaries and never split a character.
    """
    if max_len <= _RESERVE * 2:
        raise ValueError("max_len too small for Markdown-safe splitting")
    pieces: list[str] = []
    body = text
    while len(body) > max_len:
        limit = max_len - _RESERVE
        cut = _cut_point(body, limit)
        piece, rest = body[:cut], body[cut:]
        fence, inline, bold = _open_state(piece, None)
        # inside a fence only the line break goes: code indentation is kept
        keep_indent = fence is not None and rest[:1] == "\n"
        rest = rest[1:] if keep_indent else rest if fence is not None else rest.lstrip(" \n")
        piece = piece.rstrip()
        closers, reopen = "", ""
        if inline:
            closers, reopen = "`", "`"
        if bold:
            closers, reopen = closers + "**", "**" + reopen
        if fence is not None:
            closers, reopen = closers + "\n```", f"```{fence}\n" + reopen
        if piece.strip():
            pieces.append(piece + closers)
        body = reopen + rest
    if body.strip() or not pieces:
        pieces.append(body)
    return pieces
