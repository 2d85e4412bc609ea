"""The decision and listing services as every adapter offers them (Telegram, Discord, console).

The question the condition command asks is the decision service's own example (LoopOS
integration guide); the replies are plain text, which each adapter may dress up.
"""

from __future__ import annotations

import re

from chatbridge.core.texts import Catalogue
from chatbridge.core.types import Decision, ListingDraft, ListingRequest

__all__ = [
    "CONDITION_OPTIONS",
    "CONDITION_PROMPT",
    "condition_text",
    "listing_text",
    "read_listing_request",
]

CONDITION_PROMPT = "What condition is this item in?"
CONDITION_OPTIONS = ("Excellent", "Good", "Fair", "Poor")


def condition_text(decision: Decision, texts: Catalogue, language: str | None) -> str:
    """The graded condition and its reasoning, as plain text in the user's language."""
    lines = [texts.text("condition_result", language, decision=decision.decision)]
    if decision.reasoning:
        lines.append(decision.reasoning)
    return "\n".join(lines)


def listing_text(draft: ListingDraft, texts: Catalogue, language: str | None) -> str:
    """The listing draft (title, price, details), as plain text in the user's language."""
    if draft.price is not None:
        price = f"{draft.price:.2f} {draft.currency}"
    else:
        price = texts.text("listing_no_price", language)
    lines = [draft.title, texts.text("listing_price", language, price=price)]
    lines += [f"{key}: {value}" for key, value in draft.details.items()]
    return "\n".join(lines)


# "brand: Apple; product: iPhone 12 Pro; category: Electronics" inside a /listing description,
# in English or Portuguese; a label's value runs to the next ";", "," or line end.
_LABELS = {
    "brand": "brand",
    "marca": "brand",
    "product": "product",
    "produto": "product",
    "model": "product",
    "modelo": "product",
    "category": "category",
    "categoria": "category",
}
_LABELLED = re.compile(r"(?i)\b(" + "|".join(_LABELS) + r")\s*[:=]\s*([^;,\n]+?)\s*(?:[;,\n]|$)")


def read_listing_request(text: str) -> ListingRequest:
    """Split a seller's /listing text into the item's named facts and the free description.

    The C2C descriptor takes the category, product and brand apart from the description (LoopOS
    integration guide, example 3); sellers may name them with labels, and whatever is not
    labelled is the description.
    """
    facts: dict[str, str] = {}
    for match in _LABELLED.finditer(text):
        facts.setdefault(_LABELS[match.group(1).lower()], match.group(2).strip())
    rest = _LABELLED.sub(" ", text)
    description = re.sub(r"\s+", " ", rest).strip(" ;,")
    return ListingRequest(description=description, **facts)
