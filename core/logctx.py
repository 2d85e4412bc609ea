"""Which bot, conversation and turn a log line belongs to, carried in context variables.

The engine wraps each turn in ``with log_context(bot=..., conversation=key.short(), turn=...)``;
every log record emitted inside (in that task and the tasks it starts) is tagged by the
filter that ``bots.logging_setup.configure_logging`` installs. ``core`` stays free of any
logging configuration: it only sets the context.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

FIELDS = ("bot", "conversation", "turn")

_vars: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"chatbridge_log_{name}", default=None) for name in FIELDS
}
_ORDERED = tuple(_vars[name] for name in FIELDS)


class log_context:  # lower case: used like a function, ``with log_context(...)``
    """Tag log records inside the block. Only the given fields change; nesting works (an
    inner ``log_context(turn=...)`` keeps the outer bot and conversation).

    A small class rather than a generator-based context manager: it wraps every turn.
    """

    __slots__ = ("_tokens", "_values")

    def __init__(
        self,
        *,
        bot: str | None = None,
        conversation: str | None = None,
        turn: str | int | None = None,
    ) -> None:
        self._values = (bot, conversation, turn)
        self._tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []

    def __enter__(self) -> None:
        for var, value in zip(_ORDERED, self._values, strict=True):
            if value is not None:
                self._tokens.append((var, var.set(str(value))))

    def __exit__(self, *exc: object) -> None:
        tokens, self._tokens = self._tokens, []
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str | None]:
    """The current ``bot``, ``conversation`` and ``turn`` (None where unset)."""
    return {name: var.get() for name, var in _vars.items()}
