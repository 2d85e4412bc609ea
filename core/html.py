"""A backend's HTML answer -> a neutral :class:`~chatbridge.core.types.ReplyMessage`.

LoopOS answers follow the DeepChat convention: a message has a ``text`` and an ``html``, and
the chat widget shows the text and then the HTML. In the HTML, elements that are ``<button>``
or carry the class ``deep-chat-button`` / ``deep-chat-suggestion-button`` are buttons whose
text is sent back as the user's next message. Links (``<a href>``) stay links.

This is the one place that reads backend HTML (one parse, with lexbor through selectolax):
it produces the neutral rich text of :mod:`chatbridge.core.richtext` with the buttons taken
out, so no adapter ever sees a backend's markup. The markup is untrusted and often sloppy, so
this never raises: on anything unexpected it falls back to the plain ``text``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from chatbridge.core.richtext import (
    Block,
    CodeBlock,
    ListBlock,
    ListItem,
    Paragraph,
    RichText,
    Span,
    from_plain,
    plain_text,
)
from chatbridge.core.types import Button, Link, ReplyMessage

__all__ = ["ParsedHtml", "parse_html", "parse_reply_html"]

log = logging.getLogger(__name__)

BUTTON_CLASSES = frozenset({"deep-chat-button", "deep-chat-suggestion-button"})
_SAFE_SCHEMES = frozenset({"http", "https", "tg", "mailto"})
# Never shown: scripts and the like, and form controls (their choices are buttons or nothing).
_DROP = frozenset(
    {
        "script", "style", "head", "title", "template", "noscript", "iframe", "svg", "math",
        "object", "select", "textarea", "input", "img", "video", "audio", "canvas",
    }
)  # fmt: skip
# Elements whose boundaries are line breaks inside a paragraph.
_LINES = frozenset({"tr", "dt", "dd", "figcaption", "caption", "summary"})
_CELLS = frozenset({"td", "th"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_INLINE = frozenset(
    {
        "a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "del", "dfn", "em", "font",
        "i", "ins", "kbd", "label", "mark", "q", "s", "samp", "small", "span", "strike",
        "strong", "sub", "sup", "time", "tt", "u", "var", "wbr", "big", "nobr",
    }
)  # fmt: skip
_BOLD = frozenset({"b", "strong"})
_ITALIC = frozenset({"i", "em", "cite", "dfn", "var"})
_CODE = frozenset({"code", "kbd", "samp", "tt"})
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0]+")
_LINE_SPACES = re.compile(r" *\n *")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRUNCATED_TAG = re.compile(r"</?[A-Za-z]*$")
_WORDS = re.compile(r"\W+")


@dataclass(frozen=True, slots=True)
class _Style:
    bold: bool = False
    italic: bool = False
    code: bool = False
    url: str | None = None


_NO_STYLE = _Style()


@dataclass
class ParsedHtml:
    """What one backend HTML fragment holds: a body without buttons, the buttons, the links."""

    body: RichText = ()
    buttons: list[Button] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)


def _safe_url(href: str) -> str | None:
    href = href.strip()
    try:
        scheme = urlsplit(href).scheme.lower()
    except ValueError:
        return None
    return href if href and scheme in _SAFE_SCHEMES else None


def _text_of(node: LexborNode) -> str:
    """The text of a subtree as written (labels, preformatted code)."""
    pieces: list[str] = []
    for child in node.traverse(include_text=True):
        if child.tag == "-text":
            pieces.append(child.text_content or "")
        elif child.tag == "br":
            pieces.append("\n")
    return "".join(pieces)


def _label(node: LexborNode) -> str:
    label = _SPACES.sub(" ", _text_of(node)).strip()
    # unclosed markup like "<button>A</button" can leave a broken end tag in the text
    return _TRUNCATED_TAG.sub("", label).strip()


def _is_button(tag: str, node: LexborNode) -> bool:
    if tag == "button":
        return True
    classes = node.attributes.get("class")
    return bool(classes) and not BUTTON_CLASSES.isdisjoint(str(classes).split())


def _tidy(spans: list[Span]) -> tuple[Span, ...]:
    """Whitespace as a browser shows it: runs collapsed, none around line breaks or at the
    ends; neighbouring runs of one style merged."""
    out: list[Span] = []
    last = "\n"  # what the text so far ends with ("\n" at the start: leading space dropped)
    for span in spans:
        text = _MANY_NEWLINES.sub("\n\n", _LINE_SPACES.sub("\n", span.text))
        if last in " \n":
            text = text.lstrip(" ")
        if text.startswith("\n") and out and out[-1].text.endswith(" "):
            prev = out[-1]
            out[-1] = Span(prev.text.rstrip(" "), prev.bold, prev.italic, prev.code, prev.url)
        if not out and not text.strip():
            continue
        if not text:
            continue
        if out and out[-1].same_style(span):
            prev = out[-1]
            merged = _MANY_NEWLINES.sub("\n\n", prev.text + text)
            out[-1] = Span(merged, prev.bold, prev.italic, prev.code, prev.url)
        else:
            out.append(span if span.text == text else Span(text, *_style_of(span)))
        last = text[-1]
    while out:
        prev = out[-1]
        stripped = prev.text.rstrip(" \n")
        if stripped:
            out[-1] = Span(stripped, prev.bold, prev.italic, prev.code, prev.url)
            break
        out.pop()
    return tuple(out)


def _style_of(span: Span) -> tuple[bool, bool, bool, str | None]:
    return span.bold, span.italic, span.code, span.url


class _Reader:
    """One walk over the parsed tree, building blocks, buttons and links."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.spans: list[Span] = []  # the open paragraph or list item
        self.items: list[ListItem] | None = None  # the open (outermost) list's items
        self.counters: list[int | None] = []  # per open list: next number, None = bullets
        self.buttons: list[Button] = []
        self.links: list[Link] = []
        self._labels: set[str] = set()
        self._urls: set[str] = set()

    # --- building ---------------------------------------------------------------------------

    def text(self, text: str, style: _Style) -> None:
        text = _SPACES.sub(" ", text)
        if text:
            self.spans.append(Span(text, style.bold, style.italic, style.code, style.url))

    def line_break(self, hard: bool = False) -> None:
        """A new line; consecutive ``<br>`` (``hard``) add up, block edges do not."""
        if self.spans and (hard or not self.spans[-1].text.endswith("\n")):
            self.spans.append(Span("\n"))

    def boundary(self) -> None:
        """A block starts or ends: a new paragraph (a new line inside a list item)."""
        if self.items is not None:
            self.line_break()
            return
        spans = _tidy(self.spans)
        self.spans = []
        if spans:
            self.blocks.append(Paragraph(spans))

    def end_item(self) -> None:
        spans = _tidy(self.spans)
        self.spans = []
        if spans and self.items is not None and self.counters:
            number = self.counters[-1]
            if number is not None:
                self.counters[-1] = number + 1
            self.items.append(ListItem(spans, len(self.counters) - 1, number))

    # --- walking ----------------------------------------------------------------------------

    def walk(self, node: LexborNode, style: _Style) -> None:
        child = node.child
        while child is not None:
            self.visit(child, style)
            child = child.next

    def visit(self, node: LexborNode, style: _Style) -> None:
        tag = node.tag or ""
        if tag == "-text":
            self.text(node.text_content or "", style)
            return
        if tag.startswith(("-", "!")) or tag in _DROP:
            return  # comments, doctypes, scripts
        if _is_button(tag, node):
            self.button(node)
            return
        if tag in _INLINE:
            self.walk(node, self.inline_style(tag, node, style))
        elif tag == "br":
            self.line_break(hard=True)
        elif tag in ("ul", "ol", "menu", "dir"):
            self.list(node, ordered=tag == "ol")
        elif tag == "li":
            self.item(node, style)
        elif tag == "pre":
            self.pre(node)
        elif tag in _HEADINGS:
            self.boundary()
            self.walk(node, _Style(True, style.italic, style.code, style.url))
            self.boundary()
        elif tag in _LINES:
            self.line_break()
            self.walk(node, style)
            self.line_break()
        elif tag in _CELLS:
            self.walk(node, style)
            self.text(" ", style)
        else:  # p, div, table, blockquote, hr, unknown elements: blocks
            self.boundary()
            self.walk(node, style)
            self.boundary()

    def inline_style(self, tag: str, node: LexborNode, style: _Style) -> _Style:
        if tag in _BOLD:
            return _Style(True, style.italic, style.code, style.url)
        if tag in _ITALIC:
            return _Style(style.bold, True, style.code, style.url)
        if tag in _CODE:
            return _Style(style.bold, style.italic, True, style.url)
        if tag == "a":
            href = node.attributes.get("href")
            url = _safe_url(href) if isinstance(href, str) else None
            if url is not None:
                if url not in self._urls:
                    self._urls.add(url)
                    self.links.append(Link(label=_label(node) or url, url=url))
                return _Style(style.bold, style.italic, style.code, url)
        return style

    def button(self, node: LexborNode) -> None:
        # outermost button-like elements only: <div class="deep-chat-button"><button>..</button>
        # is one button; its label is never part of the body
        label = _label(node)
        if not label or "disabled" in node.attributes or label in self._labels:
            return
        self._labels.add(label)
        self.buttons.append(Button(label=label, payload=label))

    def list(self, node: LexborNode, ordered: bool) -> None:
        outermost = self.items is None
        if outermost:
            self.boundary()
            self.items = []
        else:
            self.end_item()  # the text before a nested list is its parent item
        self.counters.append(1 if ordered else None)
        self.walk(node, _NO_STYLE)
        self.end_item()  # text directly inside the list, outside any <li>
        self.counters.pop()
        if outermost and self.items is not None:
            items, self.items = self.items, None
            if items:
                self.blocks.append(ListBlock(tuple(items)))

    def item(self, node: LexborNode, style: _Style) -> None:
        if self.items is None:  # a stray <li>: a one-item list
            self.boundary()
            self.items, self.counters = [], [None]
            self.walk(node, style)
            self.end_item()
            items, self.items, self.counters = self.items, None, []
            if items:
                self.blocks.append(ListBlock(tuple(items)))
            return
        self.end_item()
        self.walk(node, style)
        self.end_item()

    def pre(self, node: LexborNode) -> None:
        code = _text_of(node).strip("\n")
        if not code.strip():
            return
        if self.items is not None:
            self.spans.append(Span(code, code=True))
            return
        self.boundary()
        self.blocks.append(CodeBlock(code))


def parse_html(html: str) -> ParsedHtml:
    """Read backend HTML (may raise on markup the parser cannot take)."""
    tree = LexborHTMLParser(html)
    root = tree.body
    reader = _Reader()
    if root is not None:
        reader.walk(root, _NO_STYLE)
    reader.boundary()
    if reader.items is not None:  # pragma: no cover - lists always close in walk()
        reader.end_item()
    return ParsedHtml(tuple(reader.blocks), reader.buttons, reader.links)


# --- text and html together -----------------------------------------------------------------


def _words(text: str) -> str:
    """The words of ``text``, for telling whether one text repeats another (punctuation and
    bullets aside); text without word characters (emoji) compares as itself."""
    words = _WORDS.sub(" ", text).strip() or _SPACES.sub(" ", text).strip()
    return " " + words.casefold() + " "


def _run_matching(words: str, html_words: list[str], used: set[int]) -> range | None:
    """Consecutive unused HTML blocks whose words, together, are exactly ``words``."""
    for start in range(len(html_words)):
        joined = " "
        for end in range(start, len(html_words)):
            if end in used:
                break
            joined = joined + html_words[end].strip() + " "
            if joined == words:
                return range(start, end + 1)
            if not words.startswith(joined):
                break
    return None


def _merge(text: str, html_body: RichText, labels: set[str]) -> RichText:
    """The text, then the HTML's blocks; what the HTML repeats of the text is shown once, in
    the text's place and with the HTML's formatting."""
    text = "\n".join(line for line in text.split("\n") if line.strip() not in labels)
    text_body = from_plain(text)
    if not html_body or not text_body:
        return html_body or text_body
    all_text = _words(plain_text(text_body))
    if all_text == _words(plain_text(html_body)):
        return html_body  # the same words, split or formatted differently: the HTML's form
    html_words = [_words(plain_text((block,))) for block in html_body]
    used: set[int] = set()
    out: list[Block] = []
    for block in text_body:
        run = _run_matching(_words(plain_text((block,))), html_words, used)
        if run is None:
            out.append(block)
        else:
            used.update(run)
            out.extend(html_body[i] for i in run)
    for i, block in enumerate(html_body):
        if i not in used and html_words[i].strip() and html_words[i] not in all_text:
            out.append(block)
    return tuple(out)


def parse_reply_html(html: str | None, text: str) -> ReplyMessage:
    """One backend message: its ``text``, then what its ``html`` adds, buttons taken out."""
    text = (text or "").strip()
    if html is None or not html.strip():
        return ReplyMessage(text=text)
    try:
        parsed = parse_html(html)
    except Exception:  # untrusted markup must never break a turn
        log.warning("unreadable reply html (%d chars); using plain text", len(html), exc_info=True)
        return ReplyMessage(text=text)
    labels = {button.label for button in parsed.buttons}
    body = _merge(text, parsed.body, labels)
    return ReplyMessage(
        text=plain_text(body),
        buttons=tuple(parsed.buttons),
        links=tuple(parsed.links),
        body=body,
    )
