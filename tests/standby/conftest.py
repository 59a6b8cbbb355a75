"""One embedded PostgreSQL server for the active/standby tests; each test gets its own database."""

from __future__ import annotations

import pytest

from tests.standby.pg import create_database, embedded_server


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    with embedded_server(tmp_path_factory.mktemp("standby-pg")) as url:
        yield url


@pytest.fixture
async def pg_url(pg_server):
    return await create_database(pg_server)
