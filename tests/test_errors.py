"""core.errors.best_effort: cleanup that may fail, never silently."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chatbridge.core.errors import best_effort

log = logging.getLogger("chatbridge.tests.errors")


async def test_a_failure_is_logged_once_and_the_caller_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def close() -> None:
        raise ConnectionResetError("peer went away")

    with caplog.at_level(logging.DEBUG, logger=log.name):
        with best_effort(log, "closing the session"):
            await close()
        reached = True
    assert reached
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "closing the session failed: ConnectionResetError('peer went away')"
    ]
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)


async def test_cancellation_passes_through() -> None:
    with pytest.raises(asyncio.CancelledError), best_effort(log, "closing"):
        raise asyncio.CancelledError


def test_nothing_is_logged_when_nothing_fails(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=log.name), best_effort(log, "closing"):
        pass
    assert caplog.records == []
