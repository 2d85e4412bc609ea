"""/cancel across replicas on a real redis-server: the user's /cancel reaches whichever
replica runs the conversation's turn (published to every replica of the bot), not only
the one that received the command."""

from __future__ import annotations

from typing import cast

from test_engine import ScriptedBackend
from test_replicas import Node, key, nodes, pytestmark, wait_for  # noqa: F401

from chatbridge.core.types import Inbound


async def test_a_cancel_received_by_another_replica_stops_the_turn(
    nodes: list[Node],  # noqa: F811
) -> None:
    a, b = nodes
    await a.replicas.start()
    await b.replicas.start()
    k = key("u1")
    await wait_for(lambda: len(a.replicas.owned) == 2 and len(b.replicas.owned) == 2)
    runner, other = (a, b) if a.replicas.partition_of(k) in a.replicas.owned else (b, a)
    backend = cast(ScriptedBackend, a.engine.backend)
    backend.delay = 30.0  # an answer that takes long: cancelled while it is generated
    await other.accept(Inbound(k, "long question", message_id="m1"), "src:1")
    await wait_for(lambda: backend.running.get("s1", 0) == 1)
    assert not other.engine.cancel_here(k)  # not running where the /cancel came
    assert await other.engine.cancel(k)
    await wait_for(lambda: any(line.startswith("u1:fail") for line in runner.log))
    assert backend.running["s1"] == 0
    assert not [line for line in runner.log if line.startswith("u1:finish")]
    # nothing running anywhere: every replica says so
    assert not await other.engine.cancel(k)
    assert not await other.engine.cancel(key("u2"))
