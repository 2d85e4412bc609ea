"""Backend HTML -> Telegram's HTML subset; length and splitting as Telegram counts them.

Telegram's parse mode accepts a handful of inline tags and rejects the whole message on
anything else ("can't parse entities"), so backend HTML goes through nh3 (a real sanitiser)
and then a small pass that turns block structure (paragraphs, line breaks, lists, headings)
into the newlines Telegram shows. Lengths are Telegram's: visible text in UTF-16 code units.
"""

from __future__ import annotations

import html
import re

import nh3

from chatbridge.core.textsplit import atoms, utf16_len

# What Telegram renders (span/tg-emoji/tg-time need attributes we do not produce: left out).
INLINE_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
    }
)
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "td",
        "th",
        "table",
        "thead",
        "tbody",
        "hr",
        "section",
        "article",
        "header",
        "footer",
        "dl",
        "dt",
        "dd",
    }
)
_URL_SCHEMES = {"http", "https", "tg", "mailto"}
_TOKEN_RE = re.compile(r"(<[^>]*>)")
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>")
# a tag, an entity or one grapheme cluster: cuts fall between atoms (core.textsplit)
_ATOM_RE = atoms(r"<[^>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);")


def escape(text: str) -> str:
    """Plain text as Telegram HTML."""
    return html.escape(text, quote=False)


def sanitize(source: str) -> str:
    """Backend HTML as Telegram HTML: allowed tags kept, others stripped, text escaped."""
    cleaned = nh3.clean(
        source,
        tags=set(INLINE_TAGS | _BLOCK_TAGS),
        # controls cannot work in a Telegram message; their choices come as ReplyMessage
        # buttons and become the inline keyboard, so their text must not repeat in the body
        clean_content_tags={"script", "style", "button", "select", "textarea", "template"},
        attributes={"a": {"href"}, "blockquote": {"expandable"}},
        url_schemes=_URL_SCHEMES,
        link_rel=None,
        strip_comments=True,
    )
    out: list[str] = []
    pre = 0
    open_links: list[bool] = []  # per open <a>: was it kept (has an href)?
    for token in _TOKEN_RE.split(cleaned):
        if not token:
            continue
        m = _TAG_RE.fullmatch(token)
        if m is None:  # text, already escaped by nh3 (which writes &nbsp; Telegram refuses)
            text = token.replace("&nbsp;", "\u00a0")
            out.append(text if pre else re.sub(r"[ \t\r\n\f]+", " ", text))
            continue
        closing, name, attrs = m.group(1) == "/", m.group(2).lower(), m.group(3)
        if name in _BLOCK_TAGS:
            out.append(_block(name, closing))
        elif name == "a":
            if closing:
                if open_links and open_links.pop():
                    out.append("</a>")
            else:
                keep = "href=" in attrs
                open_links.append(keep)
                if keep:
                    out.append(f"<a{attrs}>")
        elif name in INLINE_TAGS:
            if name == "pre":
                pre += -1 if closing else 1
            out.append(f"</{name}>" if closing else f"<{name}{attrs}>")
    return _tidy("".join(out))


def _block(name: str, closing: bool) -> str:
    if name in {"h1", "h2", "h3", "h4", "h5", "h6"}:
        return "</b>\n" if closing else "\n<b>"
    if name == "li":
        return "" if closing else "\n• "
    if name in {"td", "th", "dd"}:
        return " " if closing else ""
    if name == "hr":
        return "\n"
    if name == "br":
        return "\n"
    return "\n" if name in {"tr", "dt"} or closing else "\n\n"


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)  # no spaces around line breaks
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


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
    atoms = _ATOM_RE.findall(tg_html)
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
