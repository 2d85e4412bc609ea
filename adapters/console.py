"""The terminal as a chat platform: the demo's front end and a debugging tool.

Interactive or piped: each input line is one user message. Replies stream as they arrive;
buttons print as numbered choices (typing the number presses one); ``/image PATH [caption]``
attaches a photo; ``/condition TEXT`` and ``/listing PATH TEXT`` use the decision and listing
services; ``/reset`` starts over. With piped input it exits after the last reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from chatbridge.core.errors import NotSupported
from chatbridge.core.images import ImageRejected, load_image
from chatbridge.core.item_services import (
    CONDITION_OPTIONS,
    CONDITION_PROMPT,
    condition_text,
    listing_text,
    service_failure_text,
)
from chatbridge.core.protocols import Conversations
from chatbridge.core.richtext import plain_text
from chatbridge.core.texts import Catalogue
from chatbridge.core.types import Button, ConversationKey, Image, Inbound, ReplyMessage

log = logging.getLogger(__name__)


class ConsoleSurface:
    """Renders one reply on a text stream."""

    def __init__(self, out: TextIO, prefix: str = "assistant> ", link: str = "link") -> None:
        self._out = out
        self._prefix = prefix
        self._link = f"({link})"  # the label of a link line, in the console's language
        self._streamed = ""
        self.buttons: list[Button] | None = None  # set by finish(); None when the turn failed

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def begin(self) -> None:
        self._streamed = ""

    async def append(self, text: str) -> None:
        if not self._streamed:
            self._write(self._prefix)
        self._streamed += text
        self._write(text)

    async def replace(self, text: str) -> None:
        if text.startswith(self._streamed):
            await self.append(text[len(self._streamed) :])
            return
        # a terminal cannot take printed text back: show the corrected answer on a new line
        if self._streamed:
            self._write("\n")
        self._streamed = ""
        await self.append(text)

    async def notice(self, text: str) -> None:
        if self._streamed:
            self._write("\n")
            self._streamed = ""
        self._write(f"(i) {text}\n")

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        # a terminal shows no formatting: the body's plain reading (links are listed below)
        texts = [plain_text(m.body) for m in messages]
        full = "\n\n".join(t for t in texts if t.strip())
        if self._streamed and full.strip() == self._streamed.strip():
            self._write("\n")  # the stream already showed exactly this answer
        else:
            if self._streamed:
                self._write("\n")
            for text in texts:
                if text.strip():
                    self._write(f"{self._prefix}{text.strip()}\n")
        self.buttons = [b for m in messages for b in m.buttons]
        choices = [b for b in self.buttons if b.payload is not None]
        for n, button in enumerate(choices, 1):
            self._write(f"  [{n}] {button.label}\n")
        for button in self.buttons:
            if button.url is not None:
                self._write(f"  {self._link} {button.label}: {button.url}\n")
        for message in messages:
            for link in message.links:
                self._write(f"  {self._link} {link.label}: {link.url}\n")
        self._streamed = ""

    async def fail(self, text: str) -> None:
        try:
            if self._streamed:
                self._write("\n")
                self._streamed = ""
            self._write(f"(!) {text}\n")
        except (OSError, ValueError) as exc:  # the terminal is gone: log it, never raise
            log.error("could not show that a turn failed: %s", type(exc).__name__)


class ConsoleAdapter:
    """Runs a chat between the terminal and one engine until end of input or ``/quit``."""

    def __init__(
        self,
        *,
        name: str,
        engine: Conversations,
        user_id: str = "console-user",
        language: str | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        max_image_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.name = name
        self.engine = engine
        self.key = ConversationKey(bot=name, platform="console", chat_id="console", user_id=user_id)
        self.language = language
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._max_image_bytes = max_image_bytes
        self._choices: list[Button] = []
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"console:{self.name}")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _start_reader(self) -> asyncio.Queue[str | None]:
        """Read input lines on a daemon thread.

        A blocking ``readline`` in the default executor would keep the process alive at
        shutdown (asyncio joins those threads) until the user pressed Enter; a daemon thread
        does not.
        """
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def pump() -> None:
            try:
                for line in iter(self._in.readline, ""):
                    loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\r\n"))
            except (OSError, ValueError):  # input closed under us
                pass
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=pump, name=f"console-input:{self.name}", daemon=True).start()
        return lines

    @property
    def _catalogue(self) -> Catalogue:
        return self.engine.texts.catalogue

    def _text(self, key: str, **fields: object) -> str:
        """``key`` from the bot's catalogue in the console user's language."""
        return self._catalogue.text(key, self.language, **fields)

    def _tell(self, key: str, **fields: object) -> None:
        """A problem with what the user typed, from the catalogue."""
        self._say(f"(!) {self._text(key, **fields)}")

    def _say(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    async def run(self) -> None:
        interactive = self._in.isatty()
        lines = self._start_reader()
        if interactive:
            self._say(self._text("console_banner", bot=self.name))
        you = self._text("console_you")
        try:
            while True:
                if interactive:
                    self._out.write(f"{you}> ")
                    self._out.flush()
                line = await lines.get()
                if line is None or line.strip() == "/quit":
                    break
                if not interactive and line.strip():
                    self._say(f"{you}> {line}")
                await self.handle_line(line.strip())
        finally:
            self.finished.set()

    async def handle_line(self, line: str) -> None:
        if not line:
            return
        if line == "/help":
            self._say(self._text("console_help"))
            return
        if line == "/reset":
            await self.engine.reset(self.key)
            self._choices = []
            self._say(f"(i) {self._text('reset_done')}")
            return
        if line.startswith("/image"):
            await self._send_image(line[len("/image") :].strip())
            return
        if line.startswith(("/condition", "/listing")):
            command, _, args = line.partition(" ")
            await (self._condition if command == "/condition" else self._listing)(args.strip())
            return
        if line.isdigit() and self._choices:
            n = int(line)
            if 1 <= n <= len(self._choices):
                button = self._choices[n - 1]
                self._say(self._text("console_chose", label=button.label))
                await self._turn(
                    Inbound(
                        key=self.key,
                        text=button.label,
                        button_payload=button.payload,
                        language=self.language,
                    )
                )
                return
            self._tell("console_no_choice", n=n, count=len(self._choices))
            return
        await self._turn(Inbound(key=self.key, text=line, language=self.language))

    async def _read_image(self, path_text: str) -> Image | None:
        path = Path(path_text)
        try:
            data = await asyncio.to_thread(lambda: path.expanduser().read_bytes())
            return load_image(data, self._max_image_bytes)
        except FileNotFoundError:
            self._tell("console_no_file", path=path)
        except OSError as exc:
            log.info("console: cannot read %s: %s", path, exc.strerror)
            self._tell("console_unreadable", path=path)
        except ImageRejected as exc:
            self._say(f"(!) {self._catalogue.rejection(exc, self.language)}")
        return None

    async def _condition(self, item: str) -> None:
        if not item:
            self._tell("condition_usage")
            return
        try:
            decision = await self.engine.decide(
                CONDITION_PROMPT, CONDITION_OPTIONS, item, self.language
            )
            self._say(condition_text(decision, self._catalogue, self.language))
        except NotSupported:
            self._tell("condition_unsupported")
        except Exception as exc:
            texts = self.engine.texts
            self._say(f"(!) {service_failure_text(exc, texts, self.language, 'condition_failed')}")

    async def _listing(self, args: str) -> None:
        path_text, _, description = args.partition(" ")
        if not path_text or not description.strip():
            self._tell("console_listing_usage")
            return
        image = await self._read_image(path_text)
        if image is None:
            return
        try:
            draft = await self.engine.describe_listing((image,), description.strip(), self.language)
            self._say(listing_text(draft, self._catalogue, self.language))
        except NotSupported:
            self._tell("listing_unsupported")
        except Exception as exc:
            texts = self.engine.texts
            self._say(f"(!) {service_failure_text(exc, texts, self.language, 'listing_failed')}")

    async def _send_image(self, args: str) -> None:
        path_text, _, caption = args.partition(" ")
        if not path_text:
            self._tell("console_image_usage")
            return
        image = await self._read_image(path_text)
        if image is None:
            return
        await self._turn(
            Inbound(key=self.key, text=caption.strip(), images=(image,), language=self.language)
        )

    async def _turn(self, inbound: Inbound) -> None:
        surface = ConsoleSurface(
            self._out, f"{self._text('console_assistant')}> ", self._text("console_link")
        )
        await self.engine.handle(inbound, surface)
        if surface.buttons is not None:  # a failed turn keeps the previous choices pressable
            self._choices = [b for b in surface.buttons if b.payload is not None]
