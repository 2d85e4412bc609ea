"""Long polling that tells Telegram an update was read only once it is written down.

Telegram forgets every update below the ``offset`` of the next ``getUpdates``. PTB's Updater
moves the offset past a batch as soon as it has queued it, before any handler ran; a crash
then loses the batch. This loop hands each update of a batch to ``take`` (which returns once
the message is journaled, or known not to be a turn) and asks for the next batch, confirming
this one, only after every ``take`` of it returned. A crash before that makes Telegram send
the batch again; the journal recognises the messages it already holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from telegram import Bot, Update

from chatbridge.core.secrets import safe_error

log = logging.getLogger(__name__)


class Poller:
    def __init__(
        self,
        bot: Bot,
        take: Callable[[Update], Awaitable[None]],
        *,
        name: str,
        timeout: float,
        allowed_updates: Sequence[str],
        max_backoff: float = 30.0,
    ) -> None:
        self._bot = bot
        self._take = take
        self._name = name
        self._timeout = timeout
        self._allowed = list(allowed_updates)
        self._max_backoff = max_backoff
        self._offset = 0  # the next update id to ask for; everything below is confirmed
        self._task: asyncio.Task[None] | None = None
        self.ok = False  # the last getUpdates reached Telegram
        self.recheck = 0.2  # seconds between polls while some updates are still being taken

    def start(self) -> None:
        self.ok = True  # the bot has just reached the Bot API (getMe, setMyCommands)
        self._task = asyncio.create_task(self._run(), name=f"telegram-poll:{self._name}")

    async def stop(self) -> None:
        """Stop polling; confirm what was fully taken, so a graceful restart does not see it
        again. A batch being taken is left unconfirmed: it comes again to the next process."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._offset:
            try:
                await self._bot.get_updates(offset=self._offset, timeout=0, limit=1)
            except Exception as exc:
                log.info(
                    "telegram bot %s: final offset not confirmed: %s", self._name, safe_error(exc)
                )

    async def _run(self) -> None:
        delay = 1.0
        seen = self._offset - 1  # the highest update id handed to ``take``
        taking: dict[int, asyncio.Task[None]] = {}  # update id -> its take, still running
        try:
            while True:
                try:
                    updates = await self._bot.get_updates(
                        offset=self._offset or None,
                        # while some takes run (an album gathering its parts), ask again
                        # soon rather than wait for new updates
                        timeout=0 if taking else int(self._timeout),
                        allowed_updates=self._allowed,
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.ok = False
                    log.warning("telegram bot %s: polling failed: %s", self._name, safe_error(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_backoff)
                    continue
                self.ok = True
                delay = 1.0
                # updates come again until confirmed: each is taken once. Tasks start in
                # creation order, so each message takes its place in its conversation in
                # arrival order before any of them awaits anything.
                for update in updates:
                    if update.update_id > seen:
                        seen = update.update_id
                        taking[update.update_id] = asyncio.create_task(self._take_one(update))
                if taking:
                    await asyncio.wait(taking.values(), timeout=self.recheck)
                for update_id in [i for i, task in taking.items() if task.done()]:
                    del taking[update_id]
                # everything below the oldest update still being taken is written down
                self._offset = min(taking) if taking else seen + 1
        finally:
            for task in taking.values():
                task.cancel()

    async def _take_one(self, update: Update) -> None:
        try:
            await self._take(update)
        except Exception as exc:  # a bug: log it; the batch must still move on
            log.error(
                "telegram bot %s: update %d could not be handled: %s",
                self._name,
                update.update_id,
                safe_error(exc),
                exc_info=exc,
            )
