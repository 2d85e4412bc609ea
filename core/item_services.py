"""The decision and listing services as every adapter offers them (Telegram, Discord, console).

The question the condition command asks is the decision service's own example (LoopOS
integration guide); the replies are plain text, which each adapter may dress up.
"""

from __future__ import annotations

from chatbridge.core.types import Decision, ListingDraft

__all__ = [
    "CONDITION_FAILED",
    "CONDITION_OPTIONS",
    "CONDITION_PROMPT",
    "CONDITION_UNSUPPORTED",
    "LISTING_FAILED",
    "LISTING_UNSUPPORTED",
    "condition_text",
    "listing_text",
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
