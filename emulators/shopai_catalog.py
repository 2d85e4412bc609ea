"""The ShopAI emulator's "model": a small product catalog and canned, deterministic answers.

Answers mention the products whose keywords appear in the question. Answers that list
products carry simple HTML (``<b>`` and ``<a href>``) the way the real assistant's do, so the
client's HTML handling is exercised; answers without a match are plain text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CATALOG", "Product", "compose_answer", "compose_entries", "split_tokens"]


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    price: float
    keywords: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"https://shop.example/p/{self.sku}"


CATALOG: tuple[Product, ...] = (
    Product("ph-100", "Nova Phone 12", 299.00, ("phone", "smartphone", "mobile", "telefon")),
    Product("ph-200", "Nova Phone 12 Pro", 499.00, ("phone", "smartphone", "pro", "camera")),
    Product("lp-300", "Aero Laptop 14", 899.00, ("laptop", "notebook", "computer", "work")),
    Product("lp-310", "Aero Laptop 16 Studio", 1299.00, ("laptop", "notebook", "studio")),
    Product("hp-400", "Quiet Headphones", 149.00, ("headphones", "headphone", "music", "audio")),
    Product("ea-410", "Sport Earbuds", 79.00, ("earbuds", "audio", "sport", "running")),
    Product("wt-500", "Pulse Watch", 199.00, ("watch", "smartwatch", "fitness", "running")),
    Product("tb-600", "Slate Tablet 11", 349.00, ("tablet", "reading", "drawing")),
    Product("cm-700", "Snap Camera X", 649.00, ("camera", "photo", "photography")),
    Product("sp-800", "Room Speaker", 119.00, ("speaker", "audio", "music", "bluetooth")),
)

_GREETINGS = {"hu": "Szia! ", "pt": "Olá! ", "en": ""}
_WORD = re.compile(r"[a-z0-9áéíóöőúüűãõç]+")
# A token is a run of spaces plus a short piece of a word: close enough to an LLM's tokens
# and it splits inside words and inside HTML tags, which a client must cope with.
_TOKEN = re.compile(r"\s*[^\s]{1,5}|\s+")


def _price(value: float) -> str:
    return f"€{value:,.2f}"


def compose_answer(question: str, language: str = "en") -> str:
    """The assistant's full answer to ``question`` (deterministic), as one text."""
    return " ".join(compose_entries(question, language))


def compose_entries(question: str, language: str = "en") -> list[str]:
    """The answer as the AI entries a strict server stores it in.

    Most answers are one entry; a comparison ("compare ...", "... vs ...") of two or more
    products is answered in one entry per product between an opening and a closing entry.
    """
    words = set(_WORD.findall(question.lower()))
    matches = [p for p in CATALOG if words & set(p.keywords)][:3]
    greeting = _GREETINGS.get(language, "")
    if len(matches) >= 2 and words & {"compare", "vs", "versus"}:
        cheapest = min(matches, key=lambda p: p.price)
        return [
            f"{greeting}Here is how they compare:",
            *(
                f'<b>{p.name}</b> costs {_price(p.price)} (<a href="{p.url}">details</a>).'
                for p in matches
            ),
            f"The most affordable choice is the {cheapest.name}.",
        ]
    return [_single_answer(matches, greeting)]


def _single_answer(matches: list[Product], greeting: str) -> str:
    if not matches:
        names = ", ".join(p.name for p in CATALOG[:4])
        return (
            f"{greeting}I could not find a product matching that. Popular right now: {names}. "
            "Tell me what you need it for and your budget."
        )
    items = "; ".join(
        f'<b>{p.name}</b> for {_price(p.price)} (<a href="{p.url}">details</a>)' for p in matches
    )
    cheapest = min(matches, key=lambda p: p.price)
    return (
        f"{greeting}Here is what I found for you: {items}. "
        f"The most affordable choice is the {cheapest.name} at {_price(cheapest.price)}."
    )


def split_tokens(answer: str) -> list[str]:
    """``answer`` cut into the pieces streamed one ``token`` frame each."""
    return _TOKEN.findall(answer)
