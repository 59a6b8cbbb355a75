"""A database written by the engine before session state was typed (main at 016329e, `vibes demo --upscale`)."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

from orchestrator.service import Orchestrator
from orchestrator.sessions.models import Flow, SessionState, StageKind, StageStatus

OLD_DB = Path(__file__).resolve().parents[1] / "data" / "vibes-016329e.db"
SESSION = "831e2db7cca14a6393395003895da9b3"


async def test_a_database_written_by_the_untyped_engine_is_read_whole(farm):
    _, cfg = farm
    db_path = cfg.settings.storage.db_path
    db_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(OLD_DB, db_path)
    with sqlite3.connect(db_path) as conn:
        stage_ids = [r[0] for r in conn.execute("SELECT id FROM stages WHERE session_id=? ORDER BY idx", (SESSION,))]
    async with Orchestrator(cfg) as orch:
        session = await orch.session(SESSION)
        assert (session.flow, session.state, session.owner_id) == (Flow.DRAFT_GRID, SessionState.FINISHED, "demo-a")
        views = [await orch.stage(sid) for sid in stage_ids]
        assert [v.name for v in views] == ["drafts", "refined", "polished", "final", "upscale"]
        assert [v.kind for v in views] == [StageKind.STAGE] * 4 + [StageKind.UPSCALE]
        assert [v.is_final for v in views] == [False, False, False, True, True]
        assert [v.total for v in views] == [20, 8, 3, 1, 1]
        assert all(v.delivered == v.total and v.failed == 0 for v in views)
        assert [v.status for v in views[:4]] == [StageStatus.DONE] * 4
        assert views[1].selection, "the refined stage's votes were read back"
        current = await orch.current_stage(SESSION)
        assert current.id == views[-1].id
        # Each later stage's images descend from the images voted for in the stage before it.
        for before, after in itertools.pairwise(views[:4]):
            chosen = {im.image.id for im in before.images if im.number in before.selection}
            assert {im.image.parent_id for im in after.images} <= chosen
        await orch.set_message_ref(SESSION, "probe", "1")  # and the old file takes writes
        assert await orch.message_ref(SESSION, "probe") == "1"
