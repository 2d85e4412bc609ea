"""The ShopAI emulator's switchable faults and its counters."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FAULT_SWITCHES", "EmulatorStats", "ShopAIFaults"]


@dataclass
class ShopAIFaults:
    """Switchable faults; set attributes directly or ``POST /_emulator/faults``."""

    drop_mid_stream: bool = False  # close the connection halfway through each answer
    error_frame: bool = False  # answer each message with an error (v0.2 then disconnects)
    slow_tokens: bool = False  # add ``slow_token_delay`` before every token
    slow_token_delay: float = 0.05
    refuse_token: bool = False  # tokens issued before this was switched on are refused
    noise: bool = False  # send frames/events of unknown types before each answer
    lose_answer: bool = False  # with drop_mid_stream: the next answer dies with the connection
    drop_before_history: bool = False  # one-shot: the next answer is stored, then all drop
    stale_tokens: bool = False  # stream a draft that the final history then overwrites
    refuse_since: float = field(default=0.0, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        # Switching refuse_token on expires every token handed out so far; tokens issued
        # afterwards work, which is what an expired session looks like to a client.
        if name == "refuse_token" and value and not getattr(self, "refuse_token", False):
            object.__setattr__(self, "refuse_since", time.monotonic())
        object.__setattr__(self, name, value)


FAULT_SWITCHES = frozenset(
    {
        "drop_mid_stream",
        "error_frame",
        "slow_tokens",
        "refuse_token",
        "noise",
        "stale_tokens",
        "lose_answer",
        "drop_before_history",
    }
)


@dataclass
class EmulatorStats:
    sessions_created: int = 0
    init_errors: int = 0
    connections_opened: int = 0
    connections_refused: int = 0
    open_connections: int = 0
    heartbeats: int = 0
    heartbeat_timeouts: int = 0
    heartbeat_gaps: list[float] = field(default_factory=list)
    messages: int = 0
    dropped_while_processing: int = 0
    too_long: int = 0
    history_requests: int = 0
    history_requests_ignored: int = 0  # strict v0.2: get_history without its data
    heartbeats_unanswered: int = 0  # strict v0.1: heartbeats received while generating
    generations_stopped: int = 0  # strict: the client went away mid-answer
    unknown_frames: int = 0
    tokens_sent: int = 0
    answers: int = 0
    drops: int = 0
    errors_sent: int = 0

    def as_json(self, with_gaps: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_gaps:
            data.pop("heartbeat_gaps")
        return data
