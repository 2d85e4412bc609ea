"""Text for Discord: neutral rich text -> Discord Markdown, and Markdown-safe 2000-char
splitting.

Pure functions (no discord.py), unit-tested on their own. Core hands over
:mod:`chatbridge.core.richtext` with the buttons taken out (they become components).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from chatbridge.core.richtext import Dialect, RichText, render
from chatbridge.core.textsplit import grapheme_boundary
from chatbridge.core.types import ReplyMessage

__all__ = [
    "DISCORD",
    "MAX_CONTENT",
    "cut_label",
    "message_markdown",
    "render_markdown",
    "split_markdown",
]

MAX_CONTENT = 2000  # Discord's limit on a message's content
MAX_LABEL = 80  # ... on a button label

_SAFE_LINK_SCHEMES = ("http", "https", "mailto")
# Markdown that would change what plain text shows; underscores stay as they are (product
# names with underscores are common in shops, and Discord ignores them inside words).
_MARKDOWN = re.compile(r"([\\*`]|~~|\|\|)")


def _escape(text: str) -> str:
    return _MARKDOWN.sub(lambda m: "".join("\\" + c for c in m.group(1)), text)


def _escape_code(text: str) -> str:
    return text.replace("`", "\u02cb")  # a backtick cannot be escaped inside inline code


def _link(label: str, url: str) -> str:
    if urlsplit(url).scheme.lower() not in _SAFE_LINK_SCHEMES:
        return label
    label = label.replace("[", "\\[").replace("]", "\\]")  # a "]" would end the label
    return f"[{label}]({url.replace(')', '%29').replace(' ', '%20')})"


def _fence(code: str) -> str:
    return "```\n" + code.replace("```", "\u02cb\u02cb\u02cb") + "\n```"


DISCORD = Dialect(
    escape=_escape,
    escape_code=_escape_code,
    bold=("**", "**"),
    italic=("*", "*"),
    code=("`", "`"),
    link=_link,
    code_block=_fence,
    bullet="- ",
    joiner="\u200b",  # a zero-width space keeps "**a**" and "*b*" apart in "**a**\u200b*b*"
)


def render_markdown(body: RichText) -> str:
    """A message body as Discord Markdown."""
    return render(body, DISCORD)


def message_markdown(message: ReplyMessage) -> str:
    """What to show for one backend message."""
    return render_markdown(message.body)


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
