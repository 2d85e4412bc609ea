"""ShopAI backend: v0.1 raw WebSocket (websockets) and v0.2 Socket.IO (python-socketio).

Only the settings model is imported eagerly: configuration loading needs it, while the
backend pulls in websockets, python-socketio (and through it engine.io, requests and redis),
which a process without a ShopAI backend should not load (about 20 MiB).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatbridge.core.backends.shopai.settings import ShopAISettings

if TYPE_CHECKING:
    from chatbridge.core.backends.shopai.backend import ShopAIBackend
    from chatbridge.core.backends.shopai.connection import ShopAIMetrics
    from chatbridge.core.backends.shopai.session import (
        base_language,
        parse_supported_languages,
        pick_language,
    )

__all__ = [
    "ShopAIBackend",
    "ShopAIMetrics",
    "ShopAISettings",
    "base_language",
    "parse_supported_languages",
    "pick_language",
]

_LAZY = {
    "ShopAIBackend": "chatbridge.core.backends.shopai.backend",
    "ShopAIMetrics": "chatbridge.core.backends.shopai.connection",
    "base_language": "chatbridge.core.backends.shopai.session",
    "parse_supported_languages": "chatbridge.core.backends.shopai.session",
    "pick_language": "chatbridge.core.backends.shopai.session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
