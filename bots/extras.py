"""Optional features of our dependencies that chatbridge never uses stay out of the process.

python-telegram-bot and httpx import some optional packages merely because they happen to be
installed, and turn the feature off when the import fails:

- tornado: PTB's own webhook server (chatbridge listens with aiohttp, ``adapters.telegram
  .webhook``);
- cryptography: PTB's Telegram Passport decryption (chatbridge never sets a private key);
- aiolimiter: PTB's ``AIORateLimiter`` (chatbridge paces with ``core.pacer``);
- click and pygments: httpx's command-line tool (``httpx._main``);
- trio: httpcore's locks under the trio event loop (chatbridge runs on asyncio).

On a machine where these are installed (other tools need them) they cost a Telegram bot process
about 16 MiB of RSS (bench/README.md) — more than the engine, the store and the adapter
together — and the import time that goes with it. :func:`skip_unused_extras` installs an import
hook that refuses exactly those imports, and only when the importing module is the optional
feature's own (``OPTIONAL_FEATURES``): any other code importing tornado or cryptography gets it
as usual, and a package some other code imported first is never refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType

# the module holding an optional feature -> the top-level packages it may do without
OPTIONAL_FEATURES: dict[str, frozenset[str]] = {
    "telegram.ext._utils.webhookhandler": frozenset({"tornado"}),
    "telegram._bot": frozenset({"cryptography"}),
    "telegram._passport.credentials": frozenset({"cryptography"}),
    "telegram.ext._aioratelimiter": frozenset({"aiolimiter"}),
    "httpx._main": frozenset({"click", "pygments", "rich"}),
    "httpcore._synchronization": frozenset({"trio"}),
    "httpcore._backends.trio": frozenset({"trio"}),
}
_SKIPPED = frozenset().union(*OPTIONAL_FEATURES.values())


def _importer(frame: FrameType | None) -> str | None:
    """The module whose code runs the import (the first frame outside importlib)."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not (name.startswith("importlib") or name.startswith("_frozen_importlib")):
            return str(name)
        frame = frame.f_back
    return None


class _SkipUnusedExtras:
    """A meta path finder that refuses the optional imports above, and finds nothing else."""

    skipped: list[str]

    def __init__(self) -> None:
        self.skipped = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top not in _SKIPPED or top in sys.modules:
            return None
        importer = _importer(sys._getframe(1))
        if importer is None or top not in OPTIONAL_FEATURES.get(importer, ()):
            return None
        self.skipped.append(fullname)
        raise ModuleNotFoundError(f"{fullname} is not used by chatbridge", name=fullname)


def skip_unused_extras() -> None:
    """Install the hook (once per process); call it before python-telegram-bot or httpx is
    imported."""
    if not any(isinstance(finder, _SkipUnusedExtras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SkipUnusedExtras())
