"""The decision and listing services as every adapter offers them (Telegram, Discord, console).

The question the condition command asks is the decision service's own example (LoopOS
integration guide); the replies are plain text, which each adapter may dress up.
"""

from __future__ import annotations

import re

from chatbridge.core.types import Decision, ListingDraft, ListingRequest

__all__ = [
    "CONDITION_FAILED",
    "CONDITION_OPTIONS",
    "CONDITION_PROMPT",
    "CONDITION_UNSUPPORTED",
    "LISTING_FAILED",
    "LISTING_UNSUPPORTED",
    "condition_text",
    "listing_text",
    "read_listing_request",
]

CONDITION_PROMPT = "What condition is this item in?"
CONDITION_OPTIONS = ("Excellent", "Good", "Fair", "Poor")
CONDITION_UNSUPPORTED = "Sorry, this assistant can't grade an item's condition."
LISTING_UNSUPPORTED = "Sorry, this assistant can't prepare listings."
CONDITION_FAILED = "Sorry, I couldn't grade that right now. Please try again."
LISTING_FAILED = "Sorry, I couldn't prepare a listing right now. Please try again."


def condition_text(decision: Decision) -> str:
    lines = [f"Condition: {decision.decision}"]
    if decision.reasoning:
        lines.append(decision.reasoning)
    return "\n".join(lines)


def listing_text(draft: ListingDraft) -> str:
    price = (
        f"{draft.price:.2f} {draft.currency}" if draft.price is not None else "no price suggested"
    )
    lines = [draft.title, f"Price: {price}"]
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
