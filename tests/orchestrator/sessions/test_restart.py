"""Restart safety: a new orchestrator on the same data dir resumes sessions mid-stage and mid-vote."""

from __future__ import annotations

import pytest

from orchestrator.events import JobFinished, StageDone
from orchestrator.sessions.models import Flow, SessionRequest, SessionState, StageStatus
from tests.orchestrator.farm import TIME_SCALE
from tests.orchestrator.sessions.conftest import running, serve, small_config

pytestmark = pytest.mark.timeout(90)


async def test_restart_mid_stage_resumes_and_publishes_stage_done_once(tmp_path):
    # A slower farm so the stage is still rendering when the first orchestrator stops.
    cfg = small_config(tmp_path)
    async with serve(cfg, time_scale=TIME_SCALE * 5) as bound:
        async with running(bound) as h:
            s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox --count 12"))
            stage_id = (await h.svc.current_stage(s.id)).id
            await h.rec.wait_for(lambda r: any(isinstance(e, JobFinished) for e in r.events))
        first_done = [e for e in h.rec.of(StageDone) if e.stage_id == stage_id]
        delivered_before = {e.image.id for e in h.rec.of(JobFinished)}
        async with running(bound) as h2:
            if not first_done:
                await h2.stage_done(stage_id)
            view = await h2.svc.stage(stage_id)
            assert view.total == 12 and view.delivered == 12 and view.status is StageStatus.VOTING
            again = [e for e in h2.rec.of(StageDone) if e.stage_id == stage_id]
            assert len(first_done) + len(again) == 1, "StageDone exactly once across the restart"
            delivered_after = [e.image.id for e in h2.rec.of(JobFinished)]
            assert not delivered_before & set(delivered_after), "no image delivered twice"
            assert len(delivered_before) + len(delivered_after) == 12
            s = await h2.svc.session(s.id)
            assert s.state is SessionState.VOTING and s.stage_name == "drafts"


async def test_restart_mid_vote_keeps_votes_and_continues(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox", private=True))
        await h.svc.invite(s.id, "alice", "bob")
        view = await h.current_done(s.id)
        await h.svc.vote(s.id, view.image(1).image.id, "alice", 1)
        await h.svc.vote(s.id, view.image(4).image.id, "bob", 1)
        await h.svc.vote(s.id, view.image(5).image.id, "bob", -1)
        before = await h.svc.current_stage(s.id)
        s = await h.svc.session(s.id)
    async with running(farm) as h2:
        s2 = await h2.svc.session(s.id)
        assert s2.state is SessionState.VOTING and s2.participants == s.participants
        after = await h2.svc.current_stage(s.id)
        assert after.selection == before.selection == (1, 4)
        assert [im.tally for im in after.images] == [im.tally for im in before.images]
        assert h2.rec.of(StageDone) == [], "a stage already open for votes is not announced again"
        await h2.svc.advance(s.id, "alice")
        refined = await h2.current_done(s.id)
        assert refined.total == 3 and {im.image.parent_id for im in refined.images} == {
            view.image(1).image.id,
            view.image(4).image.id,
        }


async def test_restart_in_a_concept_round_keeps_its_options(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.CONCEPT, "alice", "a teapot"))
        view = await h.current_done(s.id)
    async with running(farm) as h2:
        again = await h2.svc.current_stage(s.id)
        assert again.options == view.options and again.field == "style"
        nxt = await h2.svc.pick(s.id, "alice", again.image(1).image.id)
        assert nxt.field == "composition"
