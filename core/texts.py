"""What the user reads when something goes wrong: plain language, no internals, no secrets."""

from __future__ import annotations

from dataclasses import dataclass

from chatbridge.core.types import Failure, FailureKind


@dataclass(frozen=True, slots=True)
class UserTexts:
    unavailable: str = (
        "Sorry, the assistant is unavailable right now. Please try again in a few minutes."
    )
    timeout: str = "Sorry, the assistant took too long to answer. Please try again."
    malformed: str = "Sorry, the assistant sent an answer I couldn't read. Please try again."
    validation: str = "The assistant couldn't accept that message: {detail}"
    auth: str = (
        "This assistant is not available at the moment because of a service configuration "
        "problem. The operator has been told."
    )
    bad_input: str = "I couldn't use that: {detail}"
    internal: str = "Sorry, something went wrong on our side. Please try again."
    restarted: str = "Your previous conversation had expired, so a new one was started."
    flood: str = "You're sending messages too quickly. Please wait {seconds} s and try again."
    interrupted: str = (
        "The service is restarting and your message could not be answered. "
        "Please send it again in a minute."
    )
    resend_after_restart: str = (
        "Sorry, the assistant restarted while working on your message, and I can't tell "
        "whether it was received. Please send it again."
    )
    empty: str = "The assistant had nothing to say to that. Try rephrasing your message."

    def for_failure(self, failure: Failure) -> str:
        """The plain-language reply for a failed turn."""
        if failure.user_text:
            return failure.user_text
        detail = failure.detail or "it was not valid"
        match failure.kind:
            case FailureKind.VALIDATION:
                return self.validation.format(detail=detail)
            case FailureKind.BAD_INPUT:
                return self.bad_input.format(detail=detail)
            case FailureKind.AUTH:
                return self.auth
            case FailureKind.TIMEOUT:
                return self.timeout
            case FailureKind.MALFORMED:
                return self.malformed
            case FailureKind.UNAVAILABLE | FailureKind.SESSION_EXPIRED:
                return self.unavailable
            case _:
                return self.internal
