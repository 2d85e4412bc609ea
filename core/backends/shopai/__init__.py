"""ShopAI backend: v0.1 raw WebSocket (websockets) and v0.2 Socket.IO (python-socketio)."""

from core.backends.shopai.backend import ShopAIBackend
from core.backends.shopai.connection import ShopAIMetrics
from core.backends.shopai.session import base_language, parse_supported_languages, pick_language
from core.backends.shopai.settings import ShopAISettings

__all__ = [
    "ShopAIBackend",
    "ShopAIMetrics",
    "ShopAISettings",
    "base_language",
    "parse_supported_languages",
    "pick_language",
]
