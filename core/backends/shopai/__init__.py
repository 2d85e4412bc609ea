"""ShopAI backend: v0.1 raw WebSocket (websockets) and v0.2 Socket.IO (python-socketio)."""

from chatbridge.core.backends.shopai.backend import ShopAIBackend
from chatbridge.core.backends.shopai.connection import ShopAIMetrics
from chatbridge.core.backends.shopai.session import (
    base_language,
    parse_supported_languages,
    pick_language,
)
from chatbridge.core.backends.shopai.settings import ShopAISettings

__all__ = [
    "ShopAIBackend",
    "ShopAIMetrics",
    "ShopAISettings",
    "base_language",
    "parse_supported_languages",
    "pick_language",
]
