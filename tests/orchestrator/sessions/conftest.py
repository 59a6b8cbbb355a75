"""Fixtures for session tests: a small funnel on the simulated farm, and a way to run the service on it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from orchestrator.config import Config, FunnelSettings, LimitSettings, LlmSettings, StageRecipe
from orchestrator.db import Database
from orchestrator.events import StageDone, StageStarted
from orchestrator.models import Family, TaskKind
from orchestrator.service import Orchestrator
from tests.conftest import BACKENDS
from tests.orchestrator.farm import TIME_SCALE, Recorder, farm_config, sim_farm

SMALL_STAGES = (
    StageRecipe("drafts", 6, Family.SD15, 512, 512, 4, TaskKind.DRAFT),
    StageRecipe("refined", 3, Family.SDXL, 1024, 1024, 4, TaskKind.STANDARD, denoise=0.6),
    StageRecipe("polished", 2, Family.SDXL, 1024, 1024, 4, TaskKind.QUALITY, denoise=0.45),
    StageRecipe("final", 1, Family.SDXL, 1024, 1024, 4, TaskKind.PREMIUM, denoise=0.35),
)


def small_config(tmp_path, **funnel) -> Config:
    """The shipped farm with a temp data dir, a 6 -> 3 -> 2 -> 1 funnel and the rule-based LLM path."""
    cfg = farm_config(tmp_path)
    fs = replace(FunnelSettings(stages=SMALL_STAGES, concept_options=3, explorer_count=4), **funnel)
    return cfg.with_settings(funnel=fs, llm=LlmSettings(enabled=False), limits=LimitSettings())


# The database every `running` orchestrator of the current test uses: "" = SQLite in its data dir, or a
# PostgreSQL URL. Set per test by `_backend`.
_DATABASE = ""


def pytest_generate_tests(metafunc):
    # The tests that run the engine (`running`) touch the database: they run on both backends, restarts included.
    # The pure ones (syntax, planning, voting) and the demo (`--out` keeps its own SQLite database) run once.
    if "running" in vars(metafunc.module):
        metafunc.parametrize("_backend", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
async def _backend(request, monkeypatch):
    """A fresh PostgreSQL database for the test when it runs on that backend (for `running` and the CLI alike)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield
        return
    server = request.getfixturevalue("postgres_server")
    url = await server.create_database()
    monkeypatch.setattr(f"{__name__}._DATABASE", url)
    monkeypatch.setenv("VIBES_DATABASE_URL", url)
    yield
    await server.drop_database(url)


@pytest.fixture
def config(tmp_path) -> Config:
    return small_config(tmp_path)


@asynccontextmanager
async def serve(config: Config, time_scale: float = TIME_SCALE):
    """Serve the config's simulated nodes; yields the config bound to their ports."""
    async with sim_farm(config, time_scale) as (_, bound):
        yield bound


@pytest.fixture
async def farm(config):
    """The simulated farm, outliving any orchestrator so restarts can be tested; yields the bound config."""
    async with serve(config) as bound:
        yield bound


class Harness:
    """A running orchestrator (the facade the tests drive, also as `svc`), a DB reader of its own and a recorder."""

    def __init__(self, orch: Orchestrator, db: Database, rec: Recorder) -> None:
        self.orch, self.svc, self.db, self.rec = orch, orch, db, rec

    async def stage_done(self, stage_id: str, timeout: float = 30.0) -> StageDone:
        def seen(r: Recorder) -> bool:
            return any(isinstance(e, StageDone) and e.stage_id == stage_id for e in r.events)

        await self.rec.wait_for(seen, timeout)
        return next(e for e in self.rec.of(StageDone) if e.stage_id == stage_id)

    async def current_done(self, session_id: str):
        """Wait for the current stage to be delivered; returns its view."""
        view = await self.svc.current_stage(session_id)
        await self.stage_done(view.id)
        return await self.svc.stage(view.id)

    async def started(self, session_id: str, name: str) -> StageStarted:
        """Wait until a stage of that name starts in the session (e.g. an upscale the service starts itself)."""

        def match(e) -> bool:
            return isinstance(e, StageStarted) and e.session_id == session_id and e.name == name

        await self.rec.wait_for(lambda r: any(match(e) for e in r.events))
        return next(e for e in self.rec.events if match(e))


def on_backend(config: Config) -> Config:
    """`config` with the current test's database (its SQLite file, or the PostgreSQL database of this run)."""
    if not _DATABASE:
        return config
    return config.with_settings(storage=replace(config.settings.storage, database=_DATABASE))


@asynccontextmanager
async def running(config: Config):
    """An Orchestrator on `config` (on the test's backend), and a Database of the tests' own on the same store."""
    config = on_backend(config)
    orch = Orchestrator(config)
    rec = Recorder(orch.bus)  # before start(), so events of a resumed session are seen too
    await orch.start()
    db = Database(config.settings.storage.database_target)
    await db.open()
    try:
        yield Harness(orch, db, rec)
    finally:
        await db.close()
        await orch.stop()
        await rec.close()
        # Keep what was published while stopping, so a test can count events across a restart.
        while (ev := rec._sub.get_nowait()) is not None:
            rec.events.append(ev)
