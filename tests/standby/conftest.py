"""The active/standby tests use the run's embedded PostgreSQL server (tests/conftest.py), a fresh database each."""

from __future__ import annotations

import pytest


@pytest.fixture
async def pg_url(postgres_server):
    url = await postgres_server.create_database()
    yield url
    await postgres_server.drop_database(url)
