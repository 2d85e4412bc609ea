"""/cancel across replicas: a cancel cannot wait in its conversation's stream (the turn it
stops is ahead of it), so it is published to every replica serving the bot, and the one
running the conversation's turn stops it and says so (:mod:`core.store.redis_coordination`
carries the messages)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from chatbridge.core.protocols import ClaimedTurns
from chatbridge.core.store.redis_coordination import RedisCoordination
from chatbridge.core.types import ConversationKey

log = logging.getLogger(__name__)


async def cancel_everywhere(
    redis: RedisCoordination, key: ConversationKey, replica: str, wait: float
) -> bool:
    """Publish a cancel of ``key``'s turn; True once a replica said it stopped one, False when
    every listening replica said it runs none, or none answered within ``wait`` seconds."""
    try:
        reply, listening = await redis.publish_cancel(key)
        return await redis.cancel_answered(reply, listening, wait)
    except Exception as exc:  # Redis out of reach: only this replica's turns can stop
        log.warning("replica %s: a cancel could not reach the others: %s", replica, exc)
        return False


async def answer_cancels(
    redis: RedisCoordination,
    replica: str,
    engines: Mapping[str, ClaimedTurns],
    closed: Callable[[], bool],
) -> None:
    """Stop, on ``engines``, the turns other replicas' cancels name, and answer each, until
    ``closed()``; a failed subscription is taken up again."""
    while not closed():
        try:
            async for key, reply in redis.cancels(sorted(engines), lambda: not closed()):
                engine = engines.get(key.bot)
                cancelled = engine is not None and engine.cancel_here(key)
                await redis.answer_cancel(reply, cancelled)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("replica %s: listening for cancels failed: %s", replica, exc)
            await asyncio.sleep(0.5)
