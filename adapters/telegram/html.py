"""Neutral rich text -> Telegram's HTML subset; length and splitting as Telegram counts them.

Core hands over :mod:`chatbridge.core.richtext` (no backend HTML ever reaches the adapter);
this module writes it in the few tags Telegram's parse mode accepts. Lengths are Telegram's:
visible text in UTF-16 code units.
"""

from __future__ import annotations

import html
import re

from chatbridge.core.richtext import Dialect, RichText, render
from chatbridge.core.textsplit import atoms as _atoms
from chatbridge.core.textsplit import utf16_len

_URL_SCHEMES = ("http", "https", "tg", "mailto")
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>")
# a tag, an entity or one grapheme cluster: cuts fall between atoms (core.textsplit)
_ATOM = r"<[^>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);"


def escape(text: str) -> str:
    """Plain text as Telegram HTML."""
    return html.escape(text, quote=False)


def _link(label: str, url: str) -> str:
    if url.split(":", 1)[0].lower() not in _URL_SCHEMES:
        return label
    return f'<a href="{html.escape(url, quote=True)}">{label}</a>'


def _pre(code: str) -> str:
    return f"<pre>{escape(code)}</pre>"


TELEGRAM = Dialect(
    escape=escape,
    escape_code=escape,
    bold=("<b>", "</b>"),
    italic=("<i>", "</i>"),
    code=("<code>", "</code>"),
    link=_link,
    code_block=_pre,
)


def render_body(body: RichText) -> str:
    """A message body as Telegram HTML."""
    return render(body, TELEGRAM)


def to_text(tg_html: str) -> str:
    """The visible text of Telegram HTML (for logs and plain-text fallbacks)."""
    return html.unescape(re.sub(r"<[^>]*>", "", tg_html))


def visible_length(tg_html: str) -> int:
    """Length Telegram checks against 4096: visible text in UTF-16 code units."""
    return utf16_len(to_text(tg_html))


def _atom_len(atom: str) -> int:
    if atom.startswith("<") and atom.endswith(">") and len(atom) > 1:
        return 0
    if atom.startswith("&") and len(atom) > 1:
        return utf16_len(html.unescape(atom))
    return utf16_len(atom)


def split_html(tg_html: str, max_len: int) -> list[str]:
    """Cut Telegram HTML into messages of at most ``max_len`` visible UTF-16 units.

    Never inside a tag, an entity or a character; tags open at a cut are closed at the end
    of one piece and reopened at the start of the next. Cuts prefer paragraph, line and
    word boundaries in the second half of a piece.
    """
    if visible_length(tg_html) <= max_len:  # the common case, kept cheap: streams call this often
        return [tg_html.strip()] if to_text(tg_html).strip() else [tg_html]
    atoms = _atoms(_ATOM).findall(tg_html)
    pieces: list[str] = []
    stack: list[tuple[str, str]] = []  # (name, opening tag) of open tags at ``start``
    start = 0
    while start < len(atoms):
        size = 0
        end = start
        while end < len(atoms) and size + _atom_len(atoms[end]) <= max_len:
            size += _atom_len(atoms[end])
            end += 1
        if end < len(atoms):
            end = _best_cut(atoms, start, end)
        opened = list(stack)
        for atom in atoms[start:end]:
            _track(stack, atom)
        body = "".join(atoms[start:end])
        piece = "".join(tag for _, tag in opened) + body
        piece += "".join(f"</{name}>" for name, _ in reversed(stack))
        if to_text(piece).strip():
            pieces.append(piece.strip())
        start = end
    return pieces or [tg_html]


def _best_cut(atoms: list[str], start: int, end: int) -> int:
    """The atom index to cut at: after the last paragraph/line/space break in the 2nd half."""
    if end <= start:
        return start + 1  # one atom longer than max_len: it goes alone (cannot happen at 4096)
    half = start + (end - start) // 2
    joined = atoms[half:end]
    for sep in ("\n\n", "\n", " "):
        for i in range(len(joined) - 1, -1, -1):
            if sep == "\n\n":
                if i > 0 and joined[i] == "\n" and joined[i - 1] == "\n":
                    return half + i + 1
            elif joined[i] == sep:
                return half + i + 1
    return end


def _track(stack: list[tuple[str, str]], atom: str) -> None:
    m = _TAG_RE.fullmatch(atom)
    if m is None:
        return
    name = m.group(2).lower()
    if m.group(1):
        if stack and stack[-1][0] == name:
            stack.pop()
    else:
        stack.append((name, atom))
