"""Slash commands: /start /help /reset /cancel /lang /listing /condition, and the admin set.

Admin commands (/reset <user id>, /reset_all, /sessions, /stats) answer only the configured
admin user ids; anyone else is refused and the attempt is logged. Every text comes from the
bot's catalogue (core/texts.py) in the user's language; the command menu is registered once
per locale (setMyCommands with language_code).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from telegram import BotCommand

from chatbridge.adapters.telegram.api import Target, TelegramOps
from chatbridge.adapters.telegram.html import escape
from chatbridge.adapters.telegram.stats import Stats
from chatbridge.core.errors import BackendError, NotSupported
from chatbridge.core.item_services import (
    CONDITION_OPTIONS,
    CONDITION_PROMPT,
    condition_text,
    listing_text,
    service_failure_text,
)
from chatbridge.core.protocols import Conversations
from chatbridge.core.texts import Catalogue
from chatbridge.core.types import ConversationKey, Image, SessionRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandContext:
    key: ConversationKey
    target: Target
    user_id: int
    language: str | None
    args: str
    images: Callable[[], Awaitable[list[Image]]]  # the message's photos (downloads on demand)


def public_commands(
    listing: bool, catalogue: Catalogue | None = None, language: str | None = None
) -> list[BotCommand]:
    texts = catalogue or Catalogue()
    names = ["start", "help", "reset", "cancel", "lang"]
    if listing:
        names += ["listing", "condition"]
    return [BotCommand(name, texts.text(f"menu_{name}", language)) for name in names]


def menu_languages(catalogue: Catalogue) -> list[str | None]:
    """The ``language_code`` values to register the menu for: None (everyone else, in the
    bot's default locale) and each locale's ISO 639-1 code (Telegram's language codes)."""
    from chatbridge.core.texts import LOCALES

    return [None, *sorted({locale.split("-", 1)[0] for locale in LOCALES})]


class Commands:
    def __init__(
        self,
        *,
        bot_name: str,
        engine: Conversations,
        ops: TelegramOps,
        admins: frozenset[int],
        stats: Stats,
        listing: bool,
        counters: Callable[[], dict[str, int]],
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self._bot = bot_name
        self._engine = engine
        self._ops = ops
        self._admins = admins
        self._stats = stats
        self._listing = listing
        self._counters = counters
        self._spawn = spawn
        self._started = time.monotonic()

    def text(self, ctx: CommandContext | None, key: str, **fields: object) -> str:
        """``key`` from the catalogue in the user's language, HTML-escaped."""
        language = ctx.language if ctx is not None else None
        template = escape(self._engine.texts.catalogue.template(key, language))
        return template.format(**{k: escape(str(v)) for k, v in fields.items()})

    def help_text(self, ctx: CommandContext | None = None) -> str:
        keys = ["help_reset", "help_cancel", "help_lang"]
        if self._listing:
            keys += ["help_listing", "help_condition"]
        lines = [
            f"<b>{self.text(ctx, 'help_title')}</b>",
            self.text(ctx, "help_intro"),
            "",
            *(self.text(ctx, key) for key in keys),
            self.text(ctx, "help_groups"),
        ]
        return "\n".join(lines)

    def handles(self, name: str) -> bool:
        """Whether ``/name`` is one of ours (else the message is an ordinary one)."""
        if name in ("listing", "condition"):
            return self._listing
        return name in (
            "start",
            "help",
            "reset",
            "cancel",
            "lang",
            "reset_all",
            "sessions",
            "stats",
        )

    async def run(self, name: str, ctx: CommandContext) -> bool:
        """Handle ``/name``; False when it is not one of ours (then it is a normal message)."""
        match name:
            case "start":
                await self._say(ctx, self.text(ctx, "start"))
            case "help":
                await self._say(ctx, self.help_text(ctx))
            case "reset" if not ctx.args:
                self._spawn(self._reset(ctx))
            case "cancel":
                # the cancelled turn tells the user itself (on its own message)
                if not await self._engine.cancel(ctx.key):
                    await self._say(ctx, self.text(ctx, "nothing_to_cancel"))
            case "lang":
                await self._lang(ctx)
            case "listing" if self._listing:
                await self._listing_draft(ctx)
            case "condition" if self._listing:
                await self._condition(ctx)
            case "reset" | "reset_all" | "sessions" | "stats":
                if ctx.user_id not in self._admins:
                    log.warning(
                        "bot %s: refused /%s from user %s in chat %s",
                        self._bot,
                        name,
                        ctx.user_id,
                        ctx.target.chat_id,
                    )
                    await self._say(ctx, self.text(ctx, "admin_only"))
                    return True
                log.info("bot %s: admin %s ran /%s", self._bot, ctx.user_id, name)
                self._spawn(self._admin(name, ctx))
            case _:
                return False
        return True

    async def _say(self, ctx: CommandContext, html: str) -> None:
        await self._ops.say(ctx.target, html)

    async def _reset(self, ctx: CommandContext) -> None:
        # queued behind this conversation's pending turns, so it applies in order
        await self._engine.reset(ctx.key)
        await self._say(ctx, self.text(ctx, "reset_done"))

    async def _lang(self, ctx: CommandContext) -> None:
        code = ctx.args.split()[0] if ctx.args else ""
        if not code or len(code) > 16 or not all(c.isalnum() or c in "-_" for c in code):
            current = ctx.language or self._engine.texts.catalogue.text("lang_not_set", None)
            await self._say(ctx, self.text(ctx, "lang_usage", current=current))
            return

        async def change() -> None:
            try:
                await self._engine.set_language(ctx.key, code)
            except BackendError:
                await self._say(ctx, self.text(ctx, "lang_failed"))
                return
            await self._say(ctx, self.text(ctx, "lang_set", code=code))

        self._spawn(change())

    async def _listing_draft(self, ctx: CommandContext) -> None:
        images = await ctx.images()
        if not images:
            await self._say(ctx, self.text(ctx, "listing_usage"))
            return

        async def describe() -> None:
            await self._ops.typing(ctx.target)
            try:
                draft = await self._engine.describe_listing(images, ctx.args, ctx.language)
            except NotSupported:
                await self._say(ctx, self.text(ctx, "listing_unsupported"))
                return
            except Exception as exc:
                log.warning("bot %s: listing failed: %s", self._bot, type(exc).__name__)
                texts = self._engine.texts
                text = service_failure_text(exc, texts, ctx.language, "listing_failed")
                await self._say(ctx, escape(text))
                return
            catalogue = self._engine.texts.catalogue
            title, _, rest = listing_text(draft, catalogue, ctx.language).partition("\n")
            await self._say(ctx, f"<b>{escape(title)}</b>\n{escape(rest)}")

        self._spawn(describe())

    async def _condition(self, ctx: CommandContext) -> None:
        if not ctx.args.strip():
            await self._say(ctx, self.text(ctx, "condition_usage"))
            return

        async def grade() -> None:
            await self._ops.typing(ctx.target)
            try:
                decision = await self._engine.decide(
                    CONDITION_PROMPT, CONDITION_OPTIONS, ctx.args, ctx.language
                )
            except NotSupported:
                await self._say(ctx, self.text(ctx, "condition_unsupported"))
                return
            except Exception as exc:
                log.warning("bot %s: condition failed: %s", self._bot, type(exc).__name__)
                texts = self._engine.texts
                text = service_failure_text(exc, texts, ctx.language, "condition_failed")
                await self._say(ctx, escape(text))
                return
            graded = condition_text(decision, self._engine.texts.catalogue, ctx.language)
            await self._say(ctx, escape(graded))

        self._spawn(grade())

    async def _admin(self, name: str, ctx: CommandContext) -> None:
        if name == "reset":
            user = ctx.args.split()[0]
            count = await self._engine.reset_user(user)
            await self._say(ctx, self.text(ctx, "admin_reset_user", count=count, user=user))
        elif name == "reset_all":
            count = await self._engine.reset_all()
            await self._say(ctx, self.text(ctx, "admin_reset_all", count=count))
        elif name == "sessions":
            count, recent = await asyncio.gather(
                self._engine.count_sessions(), self._engine.list_sessions(10)
            )
            lines = [self.text(ctx, "admin_sessions", count=count), *_session_lines(recent)]
            await self._say(ctx, "\n".join(lines))
        else:
            count = await self._engine.count_sessions()
            uptime = int(time.monotonic() - self._started)
            c = self._counters()
            s = self._stats
            stats = self.text(
                ctx,
                "admin_stats",
                sessions=count,
                running=self._engine.active_turns,
                queued=self._engine.queued_turns,
                updates=c["updates"],
                turns=c["turns"],
                sent=s.messages_sent,
                edits=s.edits,
                drafts=s.drafts,
                rate_limited=s.rate_limited,
                refused=s.refused,
                hours=uptime // 3600,
                minutes=uptime % 3600 // 60,
            )
            await self._say(ctx, f"<b>{self.text(ctx, 'admin_stats_title')}</b>\n{stats}")


def _session_lines(records: Sequence[SessionRecord]) -> list[str]:
    lines = []
    for r in records:
        where = r.key.chat_id + (f"/{r.key.thread_id}" if r.key.thread_id else "")
        when = r.last_active.strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"• user {escape(r.key.user_id)} in {escape(where)}: "
            f"{r.turn_count} turn(s), last {when} UTC"
        )
    return lines
