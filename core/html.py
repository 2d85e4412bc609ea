"""Backend HTML -> neutral :class:`~core.types.ReplyMessage` (plain text, buttons, links).

LoopOS replies follow the DeepChat convention: ``html`` is rendered by the chat widget and
elements that are ``<button>`` or carry the class ``deep-chat-button`` /
``deep-chat-suggestion-button`` are buttons whose *text* is sent back as the user's next
message. Links (``<a href>``) stay links. The markup is untrusted and often sloppy, so this
never raises: on anything unexpected it falls back to the plain ``text``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, NavigableString, Tag

from chatbridge.core.types import Button, Link, ReplyMessage

__all__ = ["BUTTON_CLASSES", "parse_reply_html"]

log = logging.getLogger(__name__)

BUTTON_CLASSES = frozenset({"deep-chat-button", "deep-chat-suggestion-button"})
_SAFE_SCHEMES = frozenset({"http", "https", "tg", "mailto"})
# Elements whose boundaries are line breaks in the readable text.
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "ul", "ol", "li", "table",
        "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr", "dl", "dt",
        "dd", "form", "fieldset", "figure", "figcaption", "main", "nav", "aside",
    }
)  # fmt: skip
_PARAGRAPHS = frozenset(
    {"p", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr", "dl"}
)
_DROP = frozenset({"script", "style", "head", "template", "noscript", "iframe", "svg"})
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def _classes(tag: Tag) -> set[str]:
    value = tag.get("class")
    if value is None:
        return set()
    if isinstance(value, str):
        return set(value.split())
    return {str(v) for v in value}


def _is_button(tag: Tag) -> bool:
    return tag.name == "button" or bool(_classes(tag) & BUTTON_CLASSES)


_TRUNCATED_TAG = re.compile(r"</?[A-Za-z]*$")


def _label(tag: Tag) -> str:
    label = _SPACES.sub(" ", tag.get_text(" ", strip=True)).strip()
    # Unclosed markup like "<button>A</button" leaves the broken end tag in the text.
    return _TRUNCATED_TAG.sub("", label).strip()


def _safe_url(href: str) -> str | None:
    href = href.strip()
    try:
        scheme = urlsplit(href).scheme.lower()
    except ValueError:
        return None
    return href if scheme in _SAFE_SCHEMES else None


def _readable_text(root: Tag) -> str:
    """Text with line breaks where a browser would break lines.

    A pending break is only written before the next visible text, so nested or empty blocks
    never pile up blank lines: paragraphs, headings and lists are separated by one blank
    line, list items and other blocks by a line break.
    """
    out: list[str] = []
    pending = 0  # newlines owed before the next visible text

    def brk(level: int) -> None:
        nonlocal pending
        pending = max(pending, level)

    def emit(chunk: str) -> None:
        nonlocal pending
        if not chunk.strip():
            if out and pending == 0:
                out.append(" ")
            return
        if pending and out:
            out.append("\n" * pending)
        pending = 0
        out.append(chunk)

    def walk(node: Tag) -> None:
        nonlocal pending
        for child in node.children:
            if isinstance(child, NavigableString):
                # Comments, doctypes and CDATA are NavigableString subclasses: skip them.
                if type(child) is NavigableString:
                    emit(str(child).replace("\n", " "))
                continue
            if not isinstance(child, Tag) or child.name in _DROP:
                continue
            name = child.name
            if name == "br":
                # consecutive <br> are real blank lines, so they add up
                if out:
                    pending += 1
                continue
            level = 2 if name in _PARAGRAPHS else 1 if name in _BLOCKS else 0
            brk(level)
            if name == "li":
                emit("• ")
            walk(child)
            brk(level)

    walk(root)
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(out).split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def _parse(html: str, text: str) -> ReplyMessage:
    soup = BeautifulSoup(html, "html.parser")

    buttons: list[Button] = []
    seen_payloads: set[str] = set()
    # Outermost button-like elements only: a <div class="deep-chat-button"><button>..</button>
    # is one button, not two.
    outermost = [
        tag
        for tag in soup.find_all(_is_button)
        if isinstance(tag, Tag) and not any(_is_button(parent) for parent in tag.parents)
    ]
    for tag in outermost:
        label = _label(tag)
        disabled = tag.has_attr("disabled")
        tag.decompose()  # button labels are not part of the message body
        if not label or disabled or label in seen_payloads:
            continue
        seen_payloads.add(label)
        buttons.append(Button(label=label, payload=label))

    links: list[Link] = []
    seen_urls: set[str] = set()
    for tag in soup.find_all("a", href=True):
        if not isinstance(tag, Tag):
            continue
        href = tag.get("href")
        url = _safe_url(href) if isinstance(href, str) else None
        if url is None or url in seen_urls:
            continue
        seen_urls.add(url)
        links.append(Link(label=_label(tag) or url, url=url))

    body = _readable_text(soup)
    if not body:
        # Some replies carry the question in ``text`` and only the buttons in ``html``.
        labels = {button.label for button in buttons}
        body = "\n".join(
            line for line in text.strip().split("\n") if line.strip() not in labels
        ).strip()
    return ReplyMessage(text=body, buttons=tuple(buttons), links=tuple(links), html=html)


def parse_reply_html(html: str | None, text: str) -> ReplyMessage:
    """Read one backend message: ``text`` is the fallback when ``html`` is empty or unreadable."""
    text = text or ""
    if html is None or not html.strip():
        return ReplyMessage(text=text.strip(), html=None)
    try:
        return _parse(html, text)
    except Exception:  # untrusted markup must never break a turn
        log.warning("unreadable reply html (%d chars); using plain text", len(html), exc_info=True)
        return ReplyMessage(text=text.strip(), html=html)
