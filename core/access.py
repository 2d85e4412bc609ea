"""Who may talk to a bot: one policy for every platform.

Adapters describe each inbound message with neutral :class:`Facts` (who wrote, in which
chat / guild / channel, with which roles, in a group or not, addressed to the bot or not)
and ask :meth:`AccessGate.check` *before* anything reaches the engine. The verdict:

- ``ALLOW``: go on.
- ``IGNORE``: say nothing (a group message the group policy does not answer).
- ``REFUSE``: the user may not use this bot; the gate returns one polite line in their
  language (at most once per user and chat per ``REMIND_AFTER`` seconds, so a refused user
  cannot make the bot spam a group) and counts the refusal. The backend is never called.

The lists admit by union: a message is allowed when its user, its chat, its guild, its
channel or one of its roles is listed. All lists empty = open to everyone. Admins are always
allowed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from chatbridge.core.texts import Catalogue

log = logging.getLogger(__name__)

GroupPolicy = Literal["off", "mention", "all"]
REMIND_AFTER = 600.0  # seconds before a refused user is told again


class Verdict(StrEnum):
    ALLOW = "allow"
    IGNORE = "ignore"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Facts:
    """What an adapter knows about one inbound message, in neutral terms (ids as text)."""

    user: str
    chat: str | None = None  # Telegram chat id; Discord channel id (DM channel in DMs)
    guild: str | None = None  # Discord guild (server) id
    channel: str | None = None  # Discord channel id (a thread's parent channel)
    roles: frozenset[str] = frozenset()
    group: bool = False  # a group / guild channel, not a private chat
    mentioned: bool = False  # addressed to the bot (mention, reply, command, listed channel)
    language: str | None = None  # the user's platform language, for the refusal text


def _ids(values: Iterable[int | str]) -> frozenset[str]:
    return frozenset(str(v) for v in values)


@dataclass(frozen=True)
class AccessPolicy:
    allowed_users: frozenset[str] = frozenset()
    allowed_chats: frozenset[str] = frozenset()
    allowed_guilds: frozenset[str] = frozenset()
    allowed_channels: frozenset[str] = frozenset()
    allowed_roles: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()
    group_policy: GroupPolicy = "mention"

    @classmethod
    def build(
        cls,
        *,
        allowed_users: Iterable[int | str] = (),
        allowed_chats: Iterable[int | str] = (),
        allowed_guilds: Iterable[int | str] = (),
        allowed_channels: Iterable[int | str] = (),
        allowed_roles: Iterable[int | str] = (),
        admins: Iterable[int | str] = (),
        group_policy: GroupPolicy = "mention",
    ) -> AccessPolicy:
        return cls(
            _ids(allowed_users),
            _ids(allowed_chats),
            _ids(allowed_guilds),
            _ids(allowed_channels),
            _ids(allowed_roles),
            _ids(admins),
            group_policy,
        )

    @property
    def open(self) -> bool:
        """True when no list restricts who may talk to the bot."""
        return not (
            self.allowed_users
            or self.allowed_chats
            or self.allowed_guilds
            or self.allowed_channels
            or self.allowed_roles
        )

    def decide(self, facts: Facts) -> Verdict:
        if facts.group:
            if self.group_policy == "off" and facts.user not in self.admins:
                return Verdict.IGNORE
            if self.group_policy != "all" and not facts.mentioned:
                return Verdict.IGNORE
        if facts.user in self.admins or self.open:
            return Verdict.ALLOW
        admitted = (
            facts.user in self.allowed_users
            or (facts.chat is not None and facts.chat in self.allowed_chats)
            or (facts.guild is not None and facts.guild in self.allowed_guilds)
            or (facts.channel is not None and facts.channel in self.allowed_channels)
            or bool(facts.roles & self.allowed_roles)
        )
        return Verdict.ALLOW if admitted else Verdict.REFUSE


@dataclass
class AccessGate:
    """One bot's policy, its refusal text and the refusal counter."""

    bot: str
    platform: str
    policy: AccessPolicy = field(default_factory=AccessPolicy)
    catalogue: Catalogue = field(default_factory=Catalogue)
    on_refused: Callable[[str, str], None] | None = None  # (bot, platform): metrics
    clock: Callable[[], float] = time.monotonic
    _told: dict[tuple[str, str | None], float] = field(default_factory=dict)

    def check(self, facts: Facts) -> tuple[Verdict, str | None]:
        """The verdict, and the line to send the user (only for a refusal not told lately)."""
        verdict = self.policy.decide(facts)
        if verdict is not Verdict.REFUSE:
            return verdict, None
        if self.on_refused is not None:
            self.on_refused(self.bot, self.platform)
        log.info(
            "bot %s: refused a message from user %s in chat %s (not in the allowed lists)",
            self.bot,
            facts.user,
            facts.chat,
        )
        now = self.clock()
        key = (facts.user, facts.chat)
        if now - self._told.get(key, -REMIND_AFTER) < REMIND_AFTER:
            return verdict, None
        if len(self._told) > 10_000:  # strangers must not grow memory without bound
            self._told = {k: t for k, t in self._told.items() if now - t < REMIND_AFTER}
        self._told[key] = now
        return verdict, self.catalogue.text("refused", facts.language)
