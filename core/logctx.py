"""Which bot, conversation and turn a log line belongs to, carried in context variables.

The engine wraps each turn in ``with log_context(bot=..., conversation=key.short(), turn=...)``;
every log record emitted inside (in that task and the tasks it starts) is tagged by the
filter that ``bots.logging_setup.configure_logging`` installs. ``core`` stays free of any
logging configuration: it only sets the context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

FIELDS = ("bot", "conversation", "turn")

_vars: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"chatbridge_log_{name}", default=None) for name in FIELDS
}


@contextmanager
def log_context(
    *,
    bot: str | None = None,
    conversation: str | None = None,
    turn: str | int | None = None,
) -> Iterator[None]:
    """Tag log records inside the block. Only the given fields change; nesting works (an
    inner ``log_context(turn=...)`` keeps the outer bot and conversation)."""
    values = {"bot": bot, "conversation": conversation, "turn": turn}
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []
    for name, value in values.items():
        if value is not None:
            var = _vars[name]
            tokens.append((var, var.set(str(value))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str | None]:
    """The current ``bot``, ``conversation`` and ``turn`` (None where unset)."""
    return {name: var.get() for name, var in _vars.items()}
