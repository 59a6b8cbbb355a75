"""Shared fixtures: loopback-only, temp data dirs, quiet loggers."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_outside_network(monkeypatch):
    """Fail any test that tries to connect anywhere but loopback."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(addr):
        if isinstance(addr, tuple) and addr:
            host = str(addr[0])
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise AssertionError(f"test tried to reach non-loopback address {host}")

    def connect(self, addr):
        check(addr)
        return real_connect(self, addr)

    def connect_ex(self, addr):
        check(addr)
        return real_connect_ex(self, addr)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.WARNING)
    yield


#: the storage backends the DB and session tests run on
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server():
    """One embedded PostgreSQL server for the whole run, started when a test first needs it."""
    from tests.embedded_pg import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="vibes-pg-"))
    server = EmbeddedPostgres(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
async def database_url(request):
    """Empty for SQLite (the data dir's file, as today), else the URL of a fresh database on the embedded server."""
    if request.param == "sqlite":
        yield ""
        return
    server = request.getfixturevalue("postgres_server")
    url = await server.create_database()
    yield url
    await server.drop_database(url)
