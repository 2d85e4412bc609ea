"""How strictly the ShopAI emulator reads its documents: every liberty they leave a server.

A client that works against the strict emulator works against any server the documents allow;
the lenient profile (:meth:`ShopAIStrict.lenient`) is the kindest server, kept for the demo.
Each switch is a reading of the v0.1 / v0.2 documents:

- ``normalise_text``: the history "should always overwrite the local chat history", nothing
  promises the user's message comes back byte for byte: stored user text is trimmed and its
  whitespace collapsed.
- ``several_entries``: the history is a list of entries, and nothing says one answer is one
  entry: a comparison is answered in one AI entry per product.
- ``silent_while_processing`` (v0.1): "When the server is currently processing something, it
  might not respond to the heartbeat message": it does not, until the answer is done.
- ``stop_on_disconnect``: generation is tied to the client's socket; when the last client of a
  session goes away mid-answer, the answer is never written (the user entry stays unanswered).
- ``heartbeat_grace`` (v0.1): "the client should send a heartbeat message every 15 seconds":
  the server times a client out this share of an interval after a missed heartbeat.
- ``history_needs_data`` (v0.2): ``get_history`` "Event data: Array": a handler that takes
  its data argument never runs without one, so no history is sent.
- ``version_path`` (v0.2): the document gives the version response, not its path; a variant
  serves it elsewhere (``None``: not at all).
- ``close_after_error`` (v0.1): "In future versions, the server will simply close the
  connection when the client is causing an error": a variant does so already.
- ``refuse_with_http`` (v0.2): "When chat_token is invalid, the server will reject the
  connection": a variant does so with this HTTP status on the handshake (``None``: with a
  Socket.IO CONNECT_ERROR).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShopAIStrict", "normalise"]


@dataclass
class ShopAIStrict:
    normalise_text: bool = True
    several_entries: bool = True
    silent_while_processing: bool = True
    stop_on_disconnect: bool = True
    heartbeat_grace: float = 0.25
    history_needs_data: bool = True
    version_path: str | None = "/version"
    refuse_with_http: int | None = None
    close_after_error: bool = False

    @classmethod
    def lenient(cls) -> ShopAIStrict:
        """The kindest server the documents allow (the demo's)."""
        return cls(
            normalise_text=False,
            several_entries=False,
            silent_while_processing=False,
            stop_on_disconnect=False,
            heartbeat_grace=2.0,
            history_needs_data=False,
        )


def normalise(text: str) -> str:
    """What a normalising server stores for a user's message."""
    return " ".join(text.split())
