"""The Discord adapter: discord.py events -> :class:`core.types.Inbound` -> the engine.

Where it listens: DMs; guild channels where the bot is mentioned or that ``channels`` lists;
threads the bot opened (``threads = true`` opens one per conversation). One session per user
per channel (per thread). Every message and button press goes to ``engine.accept``, which
takes its place in its conversation when called (discord.py runs every event as its own task;
:meth:`DiscordAdapter._accept` calls it before awaiting anything) and journals it.

Discord does not redeliver a message missed while the bot was down: on start, the journal's
unfinished turns are resumed (:meth:`DiscordAdapter.surface_for`), and once the gateway is
ready the bot reads the history of every channel with a recent conversation after the last
message it recorded there (:mod:`.catch_up`), taking what it missed like a live message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import discord

from chatbridge.adapters.discord_adapter import endpoints
from chatbridge.adapters.discord_adapter.catch_up import catch_up
from chatbridge.adapters.discord_adapter.commands import build_tree
from chatbridge.adapters.discord_adapter.components import PayloadButton, disabled_copy
from chatbridge.adapters.discord_adapter.operations import (
    CatalogueTranslator,
    access_facts,
    startup_failure,
)
from chatbridge.adapters.discord_adapter.options import DiscordOptions
from chatbridge.adapters.discord_adapter.surface import DiscordSurface
from chatbridge.adapters.discord_adapter.tracing import discord_pacer, platform_trace
from chatbridge.core.access import AccessGate, AccessPolicy, Verdict
from chatbridge.core.budget import RouteBuckets
from chatbridge.core.errors import best_effort
from chatbridge.core.images import ImageRejected, check_size, load_image
from chatbridge.core.locales import en
from chatbridge.core.pacer import SharedWindows
from chatbridge.core.protocols import Conversations, PlatformMetrics, Prepared
from chatbridge.core.secrets import register_secret
from chatbridge.core.texts import Catalogue
from chatbridge.core.types import ConversationKey, Image, Inbound

__all__ = ["DiscordAdapter"]

log = logging.getLogger(__name__)

PLATFORM = "discord"
# The English texts (tests compare against them); what users read comes from the bot's
# catalogue (core/texts.py): interactions in the user's Discord locale, messages (which carry
# no locale) in the bot's default locale.
NOT_FOR_YOU = en.TEXTS["button_not_yours"]
EXPIRED = en.TEXTS["button_expired"]
EMPTY = en.TEXTS["empty_message"]
DOWNLOAD_FAILED = en.TEXTS["download_failed"]


class _Client(discord.Client):
    """discord.Client wired to one adapter (events, slash commands, persistent buttons)."""

    def __init__(self, adapter: DiscordAdapter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.button_handler = adapter
        self._adapter = adapter
        self.tree = build_tree(self, adapter)

    async def setup_hook(self) -> None:
        # Buttons of messages sent before a restart still work: they are parsed from custom_id.
        self.add_dynamic_items(PayloadButton)
        # slash command names' descriptions in each user's Discord language
        await self.tree.set_translator(CatalogueTranslator(self._adapter.engine.texts.catalogue))
        await self._adapter._sync_commands(self.tree)

    async def on_message(self, message: discord.Message) -> None:
        # No await before _accept: it must run in gateway order (see the module docstring).
        await self._adapter._accept(message)

    async def on_ready(self) -> None:
        self._adapter._catch_up_later()


class DiscordAdapter:
    """One Discord bot. ``start`` logs in and connects in the background; ``stop`` closes."""

    def __init__(
        self,
        *,
        name: str,
        token: str,
        engine: Conversations,
        options: DiscordOptions,
        admins: frozenset[int],
        metrics: PlatformMetrics | None = None,
        access: AccessGate | None = None,
        budget: SharedWindows | None = None,
        routes: RouteBuckets | None = None,
    ) -> None:
        self.name = name
        # who may talk to the bot (core/access.py); the default is open, mentions in guilds
        self.access = access or AccessGate(name, PLATFORM, AccessPolicy.build(admins=admins))
        self._token = token
        register_secret(token)
        self.engine = engine
        self.options = options
        self.admins = admins
        self.metrics = metrics
        self._pacer = discord_pacer(options)  # one budget for every channel of this token
        self._pacer.shared = budget  # several replicas: the token's budget counted in Redis
        self._routes = routes  # several replicas: each route's bucket counted in Redis
        self.refused = 0  # answers Discord refused for good (channel gone, no access)
        self.client: _Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._catch_up: asyncio.Task[int] | None = None
        self._pending: set[asyncio.Future[Any]] = set()  # submitted turns not yet finished
        self._receiving = False
        self.failure: str | None = None  # why the gateway connection ended for good

    # --- lifecycle ---------------------------------------------------------------------------

    def _intents(self) -> discord.Intents:
        intents = discord.Intents.default()
        intents.message_content = self.options.message_content_intent
        intents.members = False
        intents.presences = False
        return intents

    async def start(self) -> None:
        """Log in (a bad token fails here), register commands, then connect in the background."""
        if self.client is not None:
            raise RuntimeError(f"Discord bot {self.name} is already started")
        endpoints.claim(self.name, self.options.api_base_url, self.options.gateway_url)
        sharding: dict[str, int] = {}
        if self.options.shard_id is not None and self.options.shard_count is not None:
            sharding = {"shard_id": self.options.shard_id, "shard_count": self.options.shard_count}
        client = _Client(
            self,
            intents=self._intents(),
            http_trace=platform_trace(self.name, self.metrics, self._pacer, self._routes),
            guild_ready_timeout=self.options.guild_ready_timeout,
            allowed_mentions=discord.AllowedMentions.none(),
            **sharding,
        )
        try:
            await client.login(self._token)
        except BaseException as exc:
            await client.close()
            endpoints.release(self.name)
            if isinstance(exc, Exception):
                raise startup_failure(self.name, exc) from None
            raise
        self.client = client
        # what a previous run left unfinished goes first, before any new message
        await self.engine.recover(self)
        self._receiving = True
        self._task = asyncio.create_task(self._connect(client), name=f"discord:{self.name}")

    async def _connect(self, client: _Client) -> None:
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except discord.PrivilegedIntentsRequired:
            self.failure = (
                f"Discord bot {self.name}: the Message Content intent is not enabled for this "
                "application. Enable it in the Developer Portal (Bot -> Privileged Gateway "
                "Intents) or set message_content_intent = false."
            )
            log.error("%s", self.failure)
        except discord.LoginFailure:
            self.failure = f"Discord bot {self.name}: the gateway refused the token"
            log.error("%s", self.failure)
        except Exception as exc:
            self.failure = f"Discord bot {self.name}: gateway connection ended ({exc!r})"
            log.exception("Discord bot %s: gateway connection ended", self.name)
        self._receiving = False

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the gateway session is ready (guilds received); raises RuntimeError when the
        gateway connection failed for good (e.g. a privileged intent not enabled)."""
        client, task = self.client, self._task
        if client is None or task is None:
            raise RuntimeError("not started")
        ready = asyncio.ensure_future(client.wait_until_ready())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not client.is_ready():
            raise RuntimeError(self.failure or f"Discord bot {self.name} is not connected")

    @property
    def connected(self) -> bool:
        client = self.client
        return (
            self._receiving and client is not None and client.is_ready() and not client.is_closed()
        )

    async def stop_receiving(self) -> None:
        """Leave the gateway (no new messages or presses) but keep REST open, so turns in
        progress can still deliver their answers or tell users to resend; then :meth:`stop`."""
        self._receiving = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client = self.client
        if client is not None and client.ws is not None:
            with best_effort(log, "closing the Discord gateway"):
                await client.ws.close(code=1000)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop receiving, let turns in progress deliver their answers (up to ``grace`` s),
        then disconnect.

        Closing the client at once would close its HTTP session under the engine's feet and
        lose answers that are a moment from being sent.
        """
        await self.stop_receiving()
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=grace)
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        endpoints.release(self.name)

    def _track(self, future: asyncio.Future[Any] | None) -> None:
        if future is not None:
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)

    def _catch_up_later(self) -> None:
        if self._catch_up is None or self._catch_up.done():
            self._catch_up = asyncio.create_task(self.catch_up(), name=f"catch-up:{self.name}")

    async def catch_up(self) -> int:
        """Take the messages posted while the bot was down (see :mod:`.catch_up`)."""
        client = self.client
        if client is None:
            return 0
        try:
            return await catch_up(
                client, self.engine, self.name, self._accept, limit=self.options.catch_up_limit
            )
        except Exception:
            log.exception("Discord bot %s: catching up on missed messages failed", self.name)
            return 0

    def surface_for(self, inbound: Inbound) -> DiscordSurface:
        """:class:`core.protocols.StoredReplies`: where to answer a journaled message after a
        restart, before the gateway (and its channel cache) is up."""
        assert self.client is not None
        key = inbound.key
        channel = self.client.get_partial_messageable(int(key.thread_id or key.chat_id))
        return self._surface(channel, int(key.user_id))

    async def _sync_commands(self, tree: discord.app_commands.CommandTree[Any]) -> None:
        if not self.options.sync_commands:
            return
        try:
            if self.options.command_guilds:
                for gid in self.options.command_guilds:
                    guild = discord.Object(id=gid)
                    tree.copy_global_to(guild=guild)
                    await tree.sync(guild=guild)
            else:
                await tree.sync()
        except discord.HTTPException:
            # the bot still answers messages; commands keep their previous registration
            log.exception("Discord bot %s: registering slash commands failed", self.name)

    # --- where and who -----------------------------------------------------------------------

    def key_for(self, channel: Any, user_id: int) -> ConversationKey:
        """One conversation per user per channel; per thread inside threads."""
        if isinstance(channel, discord.Thread):
            chat_id, thread_id = str(channel.parent_id), str(channel.id)
        else:
            chat_id, thread_id = str(getattr(channel, "id", "dm")), None
        return ConversationKey(
            bot=self.name,
            platform=PLATFORM,
            chat_id=chat_id,
            user_id=str(user_id),
            thread_id=thread_id,
        )

    def _addressed(self, message: discord.Message, me: discord.ClientUser) -> bool:
        """Is this message for the bot? DMs always; guilds when mentioned, listed, or in a
        thread the bot opened."""
        channel = message.channel
        if message.guild is None:
            return True
        if me.mentioned_in(message) and not message.mention_everyone:
            return True
        if not self.options.message_content_intent:
            # Without the intent, other guild messages arrive with empty content.
            return False
        listed = set(self.options.channels)
        if channel.id in listed:
            return True
        if isinstance(channel, discord.Thread):
            return channel.owner_id == me.id or channel.parent_id in listed
        return False

    @staticmethod
    def _strip_mention(text: str, me: discord.ClientUser) -> str:
        return re.sub(rf"<@!?{me.id}>", "", text).strip()

    # --- inbound messages --------------------------------------------------------------------

    async def _accept(self, message: discord.Message) -> None:
        client = self.client
        if client is None or client.user is None:
            return
        me = client.user
        if message.author.bot or message.author.id == me.id:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        verdict, refusal = self.access.check(access_facts(message, self._addressed(message, me)))
        if verdict is not Verdict.ALLOW:
            if refusal is not None:
                await self._say(message.channel, refusal, message)
            return
        channel = message.channel
        opens_thread = (
            self.options.threads
            and message.guild is not None
            and isinstance(channel, discord.TextChannel)
        )
        if opens_thread:
            # A new thread is a new conversation: nothing to order it against.
            await self._in_new_thread(message)
            return
        key = self.key_for(channel, message.author.id)

        async def prepare() -> Prepared:
            inbound = await self._inbound(message, key, channel)
            if inbound is None:
                return None
            return inbound, self._surface(channel, message.author.id, message)

        self._track(await self.engine.accept(key, prepare, source=f"m{message.id}"))

    async def _in_new_thread(self, message: discord.Message) -> None:
        me = self.client.user if self.client is not None else None
        name = self._strip_mention(message.content, me) if me is not None else ""
        title = (name or message.author.display_name)[:90]
        try:
            thread = await message.create_thread(
                name=title, auto_archive_duration=self.options.thread_auto_archive_minutes
            )
        except discord.HTTPException:
            log.warning("bot %s: could not open a thread; answering in the channel", self.name)
            thread = None
        channel: Any = thread if thread is not None else message.channel
        key = self.key_for(channel, message.author.id)
        reply_to = None if thread is not None else message

        async def prepare() -> Prepared:
            inbound = await self._inbound(message, key, channel)
            if inbound is None:
                return None
            return inbound, self._surface(channel, message.author.id, reply_to)

        # a new thread is a new conversation: nothing to order it against
        self._track(await self.engine.accept(key, prepare, source=f"m{message.id}"))

    async def _inbound(
        self, message: discord.Message, key: ConversationKey, channel: Any
    ) -> Inbound | None:
        """The user's turn, or None after telling them why it cannot be sent."""
        assert self.client is not None and self.client.user is not None
        text = self._strip_mention(message.content, self.client.user)
        try:
            images = await self._images(message)
        except ImageRejected as exc:
            await self._say(channel, self._texts.rejection(exc), message)
            return None
        except (discord.HTTPException, OSError):
            log.warning("bot %s: could not download an attachment", self.name, exc_info=True)
            await self._say(channel, self._texts.text("download_failed"), message)
            return None
        except Exception:  # a bug: the user still hears back
            log.exception("bot %s: could not take a message", self.name)
            await self._say(channel, self._texts.text("internal"), message)
            return None
        if not text and not images:
            await self._say(channel, self._texts.text("empty_message"), message)
            return None
        return Inbound(
            key=key,
            text=text,
            images=tuple(images),
            message_id=str(message.id),
        )

    async def _images(self, message: discord.Message) -> list[Image]:
        attachments = list(message.attachments)
        if len(attachments) > self.options.max_images:
            n = self.options.max_images
            raise ImageRejected("too_many_photos", n=n)
        images = []
        for attachment in attachments:
            # The announced size is checked before downloading; the bytes decide the type.
            check_size(attachment.size, self.options.max_image_bytes)
            data = await attachment.read()
            images.append(load_image(data, self.options.max_image_bytes))
        return images

    async def _say(self, channel: Any, text: str, reply_to: discord.Message | None = None) -> None:
        with contextlib.suppress(discord.HTTPException):
            if reply_to is not None and reply_to.guild is not None:
                await channel.send(text, reference=reply_to.to_reference(fail_if_not_exists=False))
            else:
                await channel.send(text)

    def _delivery_refused(self) -> None:
        self.refused += 1
        if self.metrics is not None:
            self.metrics.delivery_refused(self.name, "discord")

    @property
    def _texts(self) -> Catalogue:
        return self.engine.texts.catalogue

    def _surface(
        self, channel: Any, user_id: int, reply_to: discord.Message | None = None
    ) -> DiscordSurface:
        return DiscordSurface(
            channel,
            user_id=user_id,
            interval=self.options.stream_interval,
            pacer=self._pacer,
            deadline=self.options.delivery_deadline,
            on_refused=self._delivery_refused,
            reply_to=reply_to if reply_to is not None and reply_to.guild is not None else None,
        )

    # --- buttons -----------------------------------------------------------------------------

    async def button_pressed(
        self, interaction: discord.Interaction[Any], user_id: int, short_id: str, label: str
    ) -> None:
        if interaction.user.id != user_id:
            log.info(
                "bot %s: user %s pressed a button meant for %s",
                self.name,
                interaction.user.id,
                user_id,
            )
            text = self._texts.text("button_not_yours", str(interaction.locale))
            await interaction.response.send_message(text, ephemeral=True)
            return
        channel = interaction.channel
        if channel is None:
            return
        key = self.key_for(channel, user_id)

        async def prepare() -> Prepared:
            # Acknowledge at once (Discord allows 3 s) by disabling the pressed buttons.
            try:
                if interaction.message is not None:
                    view = disabled_copy(interaction.message)
                    await interaction.response.edit_message(view=view)
                else:
                    await interaction.response.defer()
            except discord.HTTPException:
                # too late (or Discord hiccup): the press still counts as the user's answer
                log.warning("bot %s: could not acknowledge a button press", self.name)
            payload = await self.engine.resolve_button(short_id)
            if payload is None:
                text = self._texts.text("button_expired", str(interaction.locale))
                await interaction.followup.send(text, ephemeral=True)
                return None
            inbound = Inbound(
                key=key,
                text=label,
                button_payload=payload,
                message_id=str(interaction.id),
            )
            return inbound, self._surface(channel, user_id)

        # a press is a message too: it keeps its place behind the user's earlier messages
        self._track(await self.engine.accept(key, prepare, source=f"i{interaction.id}"))
