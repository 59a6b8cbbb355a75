"""Typed session state: rows parse once and write back in the JSON shape earlier versions wrote and read."""

from __future__ import annotations

import time

import pytest

from orchestrator.db import Database, SessionRow, StageRow
from orchestrator.sessions.models import Flow, SessionState, StageKind, StageStatus, Visibility
from orchestrator.sessions.records import (
    IllegalStageMove,
    ParentShare,
    SessionData,
    SessionRecord,
    StageData,
    StageRecord,
    is_final,
)
from tests.orchestrator.sessions.conftest import on_backend, running

# Rows exactly as the engine before typed state wrote them (keys, nesting, [[id, n]] parents, a `history`).
OLD_CONCEPT_SESSION = {
    "history": [["a fox", "blurry"]],
    "concept": {"locked": {"subject": "a fox", "style": "ink"}, "field": "composition"},
    "stage_id": "st2",
    "stage_name": "composition",
    "suggestion": None,
    "suggestion_entry": None,
}
OLD_EXPLORER_SESSION = {
    "history": [],
    "pick": {"path": "/x/p.png", "prompt": "a fox", "family": "sdxl", "seed": 7, "aspect": "1:1", "image_id": "i1"},
    "stage_id": "r2",
    "stage_name": "round 2",
    "final_image_id": "i9",
    "ended_reason": "ended by the owner",
}
OLD_DRAFT_STAGE = {
    "parents": [["img-a", 3], ["img-b", 1]],
    "prev": "st0",
    "kind": "stage",
    "seed": 1234,
    "regen": True,
    "session_data": {"concept": None, "pick": None},
    "deadline_at": 1700000000.5,
}
OLD_CONCEPT_ROUND = {
    "field": "composition",
    "options": ["wide shot", "close-up"],
    "options_source": "rules",
    "prev": "st1",
    "kind": "round",
    "seed": 55,
    "regen": True,
    "session_data": {"concept": {"locked": {"subject": "a fox"}, "field": "composition"}, "pick": None},
}
OLD_EXPLORER_ROUND = {
    "pick": OLD_EXPLORER_SESSION["pick"],
    "prev": "r1",
    "kind": "round",
    "seed": 9,
    "regen": True,
    "session_data": {"concept": None, "pick": OLD_EXPLORER_SESSION["pick"]},
    "labels": ["subtle", "strong"],
}


@pytest.mark.parametrize("data", [OLD_DRAFT_STAGE, OLD_CONCEPT_ROUND, OLD_EXPLORER_ROUND])
def test_old_stage_data_reads_and_writes_back_unchanged(data):
    assert StageData.from_dict(data).to_dict() == data


@pytest.mark.parametrize("data", [OLD_CONCEPT_SESSION, OLD_EXPLORER_SESSION])
def test_old_session_data_reads_and_writes_back_without_the_duplicate_history(data):
    back = SessionData.from_dict(data).to_dict()
    assert "history" not in back  # the intent table keeps the prompts a suggestion changed
    assert back == {k: v for k, v in data.items() if k != "history"} | {
        "suggestion": None,
        "suggestion_entry": None,
    }


def test_parents_are_typed_and_stored_as_pairs():
    data = StageData.from_dict(OLD_DRAFT_STAGE)
    assert data.parents == (ParentShare("img-a", 3), ParentShare("img-b", 1))
    assert data.kind is StageKind.STAGE and data.snapshot is not None and data.snapshot.concept is None


def _stage(status: StageStatus) -> StageRecord:
    return StageRecord("s", "x", 0, "drafts", status, "s", "p", "", StageData(StageKind.STAGE, seed=1), 0.0)


def test_stage_status_moves_follow_the_table():
    generating = _stage(StageStatus.GENERATING)
    assert generating.moved(StageStatus.VOTING).status is StageStatus.VOTING
    assert _stage(StageStatus.DONE).moved(StageStatus.VOTING).status is StageStatus.VOTING  # back
    with pytest.raises(IllegalStageMove):
        _stage(StageStatus.DONE).moved(StageStatus.GENERATING)
    with pytest.raises(IllegalStageMove):
        _stage(StageStatus.VOTING).moved(StageStatus.GENERATING)
    with pytest.raises(IllegalStageMove):
        _stage(StageStatus.CANCELLED).moved(StageStatus.DONE)


def test_final_stages_are_told_by_kind_not_by_name():
    assert is_final(StageKind.UPSCALE, 5, 4)
    assert is_final(StageKind.FINAL, 6, 4)
    assert is_final(StageKind.STAGE, 3, 4)
    assert not is_final(StageKind.STAGE, 2, 4)
    assert not is_final(StageKind.ROUND, 3, 4)


async def test_a_session_written_by_the_earlier_engine_is_read_moved_and_written_back(farm):
    now = time.time()
    farm.settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(on_backend(farm).settings.storage.database_target)
    await db.open()
    settings = {"family": None, "aspect": "1:1", "count": None, "seed": None, "steps": None, "checkpoint": None}
    await db.insert_session(
        SessionRow(
            "old",
            "concept",
            "alice",
            "open",
            "voting",
            "a fox, ink",
            "blurry",
            settings,
            1,
            OLD_CONCEPT_SESSION | {"stage_id": "st2"},
            now,
            now,
        )
    )
    await db.add_participant("old", "alice", "owner")
    first = OLD_CONCEPT_ROUND | {"prev": None}
    await db.insert_stage(StageRow("st1", "old", 0, "style", "done", "st1", "a fox", "", first, now))
    round2 = OLD_CONCEPT_ROUND | {"prev": "st1"}
    await db.insert_stage(StageRow("st2", "old", 1, "composition", "voting", "st2", "a fox", "", round2, now))
    await db.close()
    async with running(farm) as h:
        s = await h.svc.session("old")
        assert s.flow is Flow.CONCEPT and s.visibility is Visibility.OPEN and s.state is SessionState.VOTING
        assert s.concept is not None and dict(s.concept.locked) == {"subject": "a fox", "style": "ink"}
        view = await h.svc.current_stage("old")
        assert view.kind is StageKind.ROUND and not view.is_final and view.options == ("wide shot", "close-up")
        back = await h.svc.back("old", "alice")
        assert back.id == "st1" and back.status is StageStatus.VOTING
        row = await h.db.get_session("old")
        assert row is not None
        rec = SessionRecord.of(row)
        assert rec.data.stage_id == "st1" and rec.data.concept is not None
        assert row.data["concept"] == {"locked": {"subject": "a fox"}, "field": "composition"}
        assert row.data["stage_name"] == "style"
