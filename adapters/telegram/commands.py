"""Slash commands: /start /help /reset /lang /listing /condition, and the admin set.

Admin commands (/reset <user id>, /reset_all, /sessions, /stats) answer only the configured
admin user ids; anyone else is refused and the attempt is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from telegram import BotCommand

from chatbridge.adapters.telegram.html import escape
from chatbridge.adapters.telegram.surface import Stats, Target, TelegramOps
from chatbridge.core.errors import BackendError, NotSupported
from chatbridge.core.item_services import CONDITION_OPTIONS, CONDITION_PROMPT
from chatbridge.core.protocols import Conversations
from chatbridge.core.types import ConversationKey, Image, SessionRecord

log = logging.getLogger(__name__)

START_TEXT = (
    "Hello! I'm your assistant. Send me a message, or a photo of an item with a short "
    "description, and I'll take it from there.\n\n/help lists what I can do."
)
REFUSED = "Sorry, that command is for administrators only."
EXPIRED = "This button has expired."


@dataclass(frozen=True)
class CommandContext:
    key: ConversationKey
    target: Target
    user_id: int
    language: str | None
    args: str
    images: Callable[[], Awaitable[list[Image]]]  # the message's photos (downloads on demand)


def public_commands(listing: bool) -> list[BotCommand]:
    commands = [
        BotCommand("start", "Start talking to the assistant"),
        BotCommand("help", "What I can do"),
        BotCommand("reset", "Forget this conversation and start over"),
        BotCommand("lang", "Change the conversation language, e.g. /lang pt-PT"),
    ]
    if listing:
        commands.append(BotCommand("listing", "Photo + short description: a listing draft"))
        commands.append(BotCommand("condition", "Describe an item: the AI grades its condition"))
    return commands


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

    def help_text(self) -> str:
        lines = [
            "<b>What I can do</b>",
            "Write to me as you would to a person; send photos (or an album) of an item "
            "with a caption to describe it.",
            "",
            "/reset: forget this conversation and start over",
            "/lang CODE: talk in another language (e.g. /lang pt-PT)",
        ]
        if self._listing:
            lines.append("/listing DESCRIPTION (as a photo caption): a marketplace listing draft")
            lines.append("/condition DESCRIPTION: the item's condition, graded by the assistant")
        lines.append("In groups, mention me or reply to my messages.")
        return "\n".join(lines)

    async def run(self, name: str, ctx: CommandContext) -> bool:
        """Handle ``/name``; False when it is not one of ours (then it is a normal message)."""
        match name:
            case "start":
                await self._say(ctx, escape(START_TEXT))
            case "help":
                await self._say(ctx, self.help_text())
            case "reset" if not ctx.args:
                self._spawn(self._reset(ctx))
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
                    await self._say(ctx, escape(REFUSED))
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
        await self._say(ctx, "Done: this conversation starts over. What can I do for you?")

    async def _lang(self, ctx: CommandContext) -> None:
        code = ctx.args.split()[0] if ctx.args else ""
        if not code or len(code) > 16 or not all(c.isalnum() or c in "-_" for c in code):
            current = escape(ctx.language or "not set")
            await self._say(ctx, f"Usage: /lang CODE, for example /lang pt-PT. Current: {current}")
            return

        async def change() -> None:
            try:
                await self._engine.set_language(ctx.key, code)
            except BackendError:
                await self._say(ctx, "Sorry, I couldn't switch languages right now.")
                return
            await self._say(
                ctx, f"Language set to <b>{escape(code)}</b>; a new conversation has started."
            )

        self._spawn(change())

    async def _listing_draft(self, ctx: CommandContext) -> None:
        images = await ctx.images()
        if not images:
            await self._say(
                ctx,
                "Send a photo with the caption /listing and a short "
                "description, e.g. <i>/listing blue denim jacket, size M</i>.",
            )
            return

        async def describe() -> None:
            await self._ops.typing(ctx.target)
            try:
                draft = await self._engine.describe_listing(images, ctx.args, ctx.language)
            except NotSupported:
                await self._say(ctx, "Sorry, this assistant can't prepare listings.")
                return
            except Exception as exc:
                log.warning("bot %s: listing failed: %s", self._bot, type(exc).__name__)
                await self._say(
                    ctx, "Sorry, I couldn't prepare a listing right now. Please try again."
                )
                return
            price = (
                f"{draft.price:.2f} {escape(draft.currency)}"
                if draft.price is not None
                else "no price suggested"
            )
            lines = [f"<b>{escape(draft.title)}</b>", f"Price: {price}"]
            lines += [f"{escape(k)}: {escape(v)}" for k, v in draft.details.items()]
            await self._say(ctx, "\n".join(lines))

        self._spawn(describe())

    async def _condition(self, ctx: CommandContext) -> None:
        if not ctx.args.strip():
            await self._say(
                ctx,
                "Tell me about the item after the command, e.g. "
                "<i>/condition iPhone 12, light scratches on the back</i>.",
            )
            return

        async def grade() -> None:
            await self._ops.typing(ctx.target)
            try:
                decision = await self._engine.decide(
                    CONDITION_PROMPT, CONDITION_OPTIONS, ctx.args, ctx.language
                )
            except NotSupported:
                await self._say(ctx, "Sorry, this assistant can't grade an item's condition.")
                return
            except Exception as exc:
                log.warning("bot %s: condition failed: %s", self._bot, type(exc).__name__)
                await self._say(ctx, "Sorry, I couldn't grade that right now. Please try again.")
                return
            lines = [f"Condition: <b>{escape(decision.decision)}</b>"]
            if decision.reasoning:
                lines.append(escape(decision.reasoning))
            await self._say(ctx, "\n".join(lines))

        self._spawn(grade())

    async def _admin(self, name: str, ctx: CommandContext) -> None:
        if name == "reset":
            user = ctx.args.split()[0]
            count = await self._engine.reset_user(user)
            await self._say(ctx, f"Reset {count} conversation(s) of user {escape(user)}.")
        elif name == "reset_all":
            count = await self._engine.reset_all()
            await self._say(ctx, f"Reset all {count} conversation(s) of this bot.")
        elif name == "sessions":
            count, recent = await asyncio.gather(
                self._engine.count_sessions(), self._engine.list_sessions(10)
            )
            lines = [f"<b>{count}</b> session(s). Most recent:", *_session_lines(recent)]
            await self._say(ctx, "\n".join(lines))
        else:
            count = await self._engine.count_sessions()
            uptime = int(time.monotonic() - self._started)
            c = self._counters()
            s = self._stats
            await self._say(
                ctx,
                "\n".join(
                    [
                        "<b>Stats</b>",
                        f"Sessions: {count}",
                        f"Turns running: {self._engine.active_turns}, queued: "
                        f"{self._engine.queued_turns}",
                        f"Updates received: {c['updates']}, turns started: {c['turns']}",
                        f"Messages sent: {s.messages_sent}, edits: {s.edits}, drafts: {s.drafts}",
                        f"Rate limits hit: {s.rate_limited}",
                        f"Uptime: {uptime // 3600} h {uptime % 3600 // 60} min",
                    ]
                ),
            )


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
