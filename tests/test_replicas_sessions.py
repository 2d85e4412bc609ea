"""The session map under several replicas on a real redis-server: a replica that stalled
while opening a conversation's first backend session never writes over the one another
replica opened and stored meanwhile (the write is a compare-and-set in Redis)."""

from __future__ import annotations

from typing import Any, cast

from test_engine import ScriptedBackend
from test_replicas import Node, key, nodes, pytestmark  # noqa: F401

from chatbridge.core.types import SessionRecord


async def test_a_session_stored_between_the_check_and_the_write_is_kept(
    nodes: list[Node],  # noqa: F811
) -> None:
    """b opens and stores its session just as a writes its own (after any check a could make
    first): a's write is refused in the same step, a keeps b's session and closes its own."""
    a, b = nodes
    backend = cast(ScriptedBackend, a.engine.backend)
    store: Any = a.store
    interleaved: list[SessionRecord] = []

    def before(write: Any) -> Any:
        async def wrapped(record: SessionRecord, *args: Any, **kwargs: Any) -> Any:
            if not interleaved and record.key == key("u1"):
                got, failure = await b.engine.turns.session_for(record.key, "en")
                assert failure is None and got is not None
                interleaved.append(got)
            return await write(record, *args, **kwargs)

        return wrapped

    for name in ("put", "put_new"):
        setattr(store, name, before(getattr(store, name)))
    record, failure = await a.engine.turns.session_for(key("u1"), "en")
    [theirs] = interleaved
    assert theirs.session_ref == "s2"  # a opened s1, then b opened s2 and stored it
    assert failure is None and record is not None and record.session_ref == "s2"
    stored = await b.store.get(key("u1"))
    assert stored is not None and stored.session_ref == "s2"
    assert backend.closed == ["s1"]
