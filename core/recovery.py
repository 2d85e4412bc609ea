"""What a restart resumes: the journal's unfinished turns, in arrival order per conversation.

By the state a crash left each turn in:

- received (never sent to the backend): run normally;
- sent to the backend, not answered: a backend that can look in its history
  (:class:`core.protocols.Recovers`, ShopAI) delivers the answer it holds without asking
  again, or the message is sent again when the backend never got it or holds no answer to
  it; any other backend
  (LoopOS ``/chat`` is not idempotent) is not asked twice: the user is told, in plain words,
  that the bot restarted and to send the message again;
- answered, not confirmed delivered: the stored answer is sent (at-least-once: the user may
  see it twice if the crash fell between the platform's confirmation and the journal write).

The adapter supplies where to answer (:class:`core.protocols.StoredReplies`), since no live
platform update exists for these messages.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chatbridge.core.protocols import StoredReplies
from chatbridge.core.turns import Turn
from chatbridge.core.types import TurnState

if TYPE_CHECKING:
    from chatbridge.core.engine import Engine

log = logging.getLogger(__name__)


async def resume(engine: Engine, replies: StoredReplies) -> int:
    journal = engine.journal
    if journal is None:
        return 0
    entries = await journal.unfinished(engine.bot)
    for entry in entries:
        try:
            surface = replies.surface_for(entry.inbound)
        except Exception:
            log.exception("recovery: no way to answer journal entry %d; dropped", entry.seq)
            await journal.advance(engine.bot, entry.seq, TurnState.FAILED_NOTIFIED)
            continue
        state = entry.state if entry.state is not TurnState.RECEIVED else None
        engine.queue_recovered(Turn(entry.inbound, surface, entry, resume=state))
    if entries:
        by_state: dict[str, int] = {}
        for entry in entries:
            by_state[entry.state] = by_state.get(entry.state, 0) + 1
        log.info("bot %s: resuming %d unfinished turns %s", engine.bot, len(entries), by_state)
    return len(entries)
