"""The decision and listing services as every adapter offers them (Telegram, Discord, console).

The question the condition command asks is the decision service's own example (LoopOS
integration guide); the replies are plain text, which each adapter may dress up.
"""

from __future__ import annotations

import re

from chatbridge.core.errors import BackendError
from chatbridge.core.texts import Catalogue, UserTexts
from chatbridge.core.types import Decision, ListingDraft, ListingRequest

__all__ = [
    "CONDITION_OPTIONS",
    "CONDITION_PROMPT",
    "condition_text",
    "listing_text",
    "read_listing_request",
    "service_failure_text",
]

CONDITION_PROMPT = "What condition is this item in?"
CONDITION_OPTIONS = ("Excellent", "Good", "Fair", "Poor")
_CONDITION_KEYS = {
    option.casefold(): f"condition_{option.casefold()}" for option in CONDITION_OPTIONS
}


def condition_text(decision: Decision, texts: Catalogue, language: str | None) -> str:
    """The graded condition and its reasoning, as plain text in the user's language (the
    grade is one of CONDITION_OPTIONS, asked in English: its name comes from the catalogue)."""
    key = _CONDITION_KEYS.get(decision.decision.casefold())
    grade = texts.text(key, language) if key is not None else decision.decision
    lines = [texts.text("condition_result", language, decision=grade)]
    if decision.reasoning:
        lines.append(decision.reasoning)
    return "\n".join(lines)


def listing_text(draft: ListingDraft, texts: Catalogue, language: str | None) -> str:
    """The listing draft (title, price, price range, description), as plain text in the
    user's language; the backend's own field names never show."""
    if draft.price is not None:
        price = f"{draft.price:.2f} {draft.currency}"
    else:
        price = texts.text("listing_no_price", language)
    lines = [draft.title, texts.text("listing_price", language, price=price)]
    details = dict(draft.details)
    low, high = details.pop("value_out_min", None), details.pop("value_out_max", None)
    if low is not None and high is not None:
        lines.append(
            texts.text("listing_range", language, low=low, high=high, currency=draft.currency)
        )
    description = details.pop("description", None)
    if description:
        lines.append(description)
    lines += [f"{key}: {value}" for key, value in details.items()]  # fields added later
    return "\n".join(lines)


def service_failure_text(
    exc: Exception, texts: UserTexts, language: str | None, fallback: str
) -> str:
    """Why a decision or listing request failed, in the user's language: the backend's
    reason when it gave one (a listing without a photo, photos too large, a refused field),
    else the command's own ``fallback`` text (``condition_failed``, ``listing_failed``)."""
    if isinstance(exc, BackendError) and exc.failure.reason is not None:
        return texts.for_failure(exc.failure, language)
    return texts.catalogue.text(fallback, language)


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
