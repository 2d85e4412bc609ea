"""MemoryStore runs the SessionStore contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from store_contract import SessionStoreContract

from chatbridge.core.store import MemoryStore


class TestMemoryStoreContract(SessionStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        s = await MemoryStore.open()
        yield s
        await s.close()
