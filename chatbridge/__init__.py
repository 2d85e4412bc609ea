"""chatbridge: AI commerce assistants (LoopOS AI, ShopAI) inside Telegram, Discord and the terminal.

The repository keeps its folders at the top (``core/``, ``adapters/``, ``bots/``,
``emulators/``); this package links them in, so the distribution installs exactly one
top-level import name, ``chatbridge`` (``chatbridge.core``, ``chatbridge.adapters``, ...).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chatbridge")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
