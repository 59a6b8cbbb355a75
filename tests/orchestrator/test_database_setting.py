"""storage.database / VIBES_DATABASE_URL: a SQLite path or a PostgreSQL URL, whose password is never shown."""

from __future__ import annotations

import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.cli.doctor import _database_health
from orchestrator.config import parse_settings
from orchestrator.db import Database, check_database, peek_ref, redact
from orchestrator.errors import ConfigError, DatabaseUnavailable
from tests.orchestrator.farm import ROOT, farm_config

URL = "postgresql://vibes:s3cr%40t@127.0.0.1:5432/vibes"


def test_default_is_the_sqlite_file_in_the_data_dir(tmp_path):
    s = parse_settings({"storage": {"data_dir": str(tmp_path)}}, env={})
    assert s.storage.database_target == tmp_path / "vibes.db"


def test_a_path_is_a_sqlite_file_and_a_url_is_postgres(tmp_path):
    s = parse_settings({"storage": {"database": str(tmp_path / "x.db")}}, env={})
    assert s.storage.database_target == tmp_path / "x.db" == s.storage.db_path
    s = parse_settings({"storage": {"database": URL}}, env={})
    assert s.storage.database_target == URL


def test_the_environment_overrides_the_settings(tmp_path):
    s = parse_settings({"storage": {"database": str(tmp_path / "x.db")}}, env={"VIBES_DATABASE_URL": URL})
    assert s.storage.database_target == URL


def test_another_scheme_is_refused_without_echoing_the_url():
    with pytest.raises(ConfigError) as e:
        parse_settings({}, env={"VIBES_DATABASE_URL": "mysql://root:hunter2@db/vibes"})
    assert "VIBES_DATABASE_URL" in str(e.value) and "mysql://" in str(e.value)
    assert "hunter2" not in str(e.value)


def test_the_password_is_not_in_the_settings_repr():
    s = parse_settings({"storage": {"database": URL}}, env={})
    assert "s3cr" not in repr(s)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, "postgresql://vibes:***@127.0.0.1:5432/vibes"),
        ("postgres://vibes@h/db?password=pw&sslmode=off", "postgres://vibes@h/db?password=***&sslmode=off"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_redact_hides_only_the_password(url, shown):
    assert redact(url) == shown


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_a_clear_error_without_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://vibes:hunter2@127.0.0.1:{_closed_port()}/vibes?password=hunter2"
    db = Database(url, busy_timeout_s=1)
    with pytest.raises(DatabaseUnavailable) as e:
        await db.open()
    assert e.value.user_message.startswith("cannot open the database at postgresql://vibes:***@127.0.0.1")
    check = await check_database(url)
    assert (check.backend, check.reachable) == ("postgresql", False)
    assert "hunter2" not in str(e.value) + check.problem + caplog.text


async def test_check_database_reads_the_schema_version_without_creating_anything(tmp_path, postgres_server):
    missing = await check_database(tmp_path / "none.db")
    assert (missing.backend, missing.reachable, missing.version, missing.problem) == ("sqlite", True, None, "")
    assert not Path(tmp_path / "none.db").exists()
    db = Database(tmp_path / "v.db")
    await db.open()
    await db.close()
    check = await check_database(tmp_path / "v.db")
    assert (check.backend, check.migrated, check.detail.split()[0]) == ("sqlite", True, "SQLite")
    url = await postgres_server.create_database()
    try:
        assert (await check_database(url)).version == 0
        db = Database(url)
        await db.open()
        await db.close()
        check = await check_database(url)
        assert (check.backend, check.migrated, check.problem) == ("postgresql", True, "")
        assert check.detail.startswith("PostgreSQL ")
    finally:
        await postgres_server.drop_database(url)


async def test_doctor_names_the_backend_and_schema_and_reads_refs_without_the_password(
    tmp_path, postgres_server, capsys
):
    url = (await postgres_server.create_database()).replace("postgres@", "postgres:topsecret@")
    try:
        cfg = farm_config(tmp_path)
        cfg = cfg.with_settings(storage=replace(cfg.settings.storage, database=url))
        db = Database(cfg.settings.storage.database_target)
        await db.open()
        await db.set_ref("engine", "health", "{}")
        await db.close()
        assert await _database_health(cfg) == 0
        assert await peek_ref(cfg.settings.storage.database_target, "engine", "health") == "{}"
        out = capsys.readouterr().out
        assert "postgresql at postgresql://postgres:***@127.0.0.1" in out and "schema v1, migrated" in out
        assert "topsecret" not in out
    finally:
        await postgres_server.drop_database(url)
    cfg = cfg.with_settings(storage=replace(cfg.settings.storage, database=url))
    assert await _database_health(cfg) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: cannot reach the database at postgresql://postgres:***@" in out and "topsecret" not in out


def test_the_cli_says_which_database_it_cannot_open_without_the_password(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VIBES_DATABASE_URL", f"postgresql://vibes:hunter2@127.0.0.1:{_closed_port()}/vibes")
    # No --out (a run with its own directory keeps its own SQLite database); the config's relative data dir lands here.
    monkeypatch.chdir(tmp_path)
    rc = main(["generate", "a cat", "--count", "1", "--sim", "--config", str(ROOT / "config")])
    err = capsys.readouterr().err
    assert rc == 2 and "vibes: cannot open the database at postgresql://vibes:***@127.0.0.1" in err
    assert "hunter2" not in err


def test_an_out_directory_keeps_the_runs_database_too(tmp_path, monkeypatch):
    """`--out DIR` (demo, generate): the run's database is a SQLite file in DIR, never the shared PostgreSQL."""
    from argparse import Namespace

    from orchestrator.cli.common import load

    monkeypatch.setenv("VIBES_DATABASE_URL", "postgresql://vibes:topsecret@127.0.0.1:5999/vibes")
    args = Namespace(config=str(Path(__file__).resolve().parents[2] / "config"))
    shared = load(args)
    assert shared.settings.storage.database_target == "postgresql://vibes:topsecret@127.0.0.1:5999/vibes"
    run = load(args, out=str(tmp_path / "run"))
    assert run.settings.storage.database_target == tmp_path / "run" / "vibes.db"
