"""Voting time: speculative next stages on the simulated farm (prediction, adoption in every state, preemption)."""

from __future__ import annotations

import pytest

from orchestrator.config import SpeculationSettings
from orchestrator.events import JobFinished, JobQueued, SpeculationChanged
from orchestrator.farm.speculative import is_speculative_batch
from orchestrator.sessions.models import Flow, SessionRequest
from tests.orchestrator.sessions.conftest import running, small_config

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path):
    """Speculation on, with no settling wait: the prediction is submitted as soon as it is known."""
    return small_config(tmp_path).with_settings(speculation=SpeculationSettings(settle_s=0.0))


def spec_finished(r) -> list[JobFinished]:
    return [e for e in r.of(JobFinished) if is_speculative_batch(e.batch_id)]


def spec_queued(r) -> list[JobQueued]:
    return [e for e in r.of(JobQueued) if is_speculative_batch(e.batch_id)]


async def drafts_with_vote(h, prompt: str = "a lighthouse at dusk --seed 7"):
    s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", prompt))
    drafts = await h.current_done(s.id)
    await h.svc.vote(s.id, drafts.image(1).image.id, "alice", 1)
    return s, drafts


async def test_prediction_is_deterministic_and_follows_votes_and_prompt(farm):
    async with running(farm) as h:
        spec = h.orch._engine.speculation
        s, drafts = await drafts_with_vote(h)
        first = await spec.predict(s.id)
        assert first is not None and len(first.keys) == 3
        assert all(k.stage_id is None and k.user_id is None for k in first.keys)
        again = await spec.predict(s.id)
        assert again == first, "same tallies, prompt and seed: same specs"
        await h.svc.vote(s.id, drafts.image(2).image.id, "bob", 1)
        other = await spec.predict(s.id)
        assert other is not None and other.keys != first.keys, "a vote that changes the selection changes the specs"
        await h.svc.vote(s.id, drafts.image(2).image.id, "bob", None)
        assert await spec.predict(s.id) == first, "the vote withdrawn: the same specs again"
        # A used suggestion changes the prompt: different specs.
        await h.svc.apply_suggestion(s.id, "alice", prompt="a lighthouse at dawn", negative="")
        changed = await spec.predict(s.id)
        assert changed is not None and changed.keys != first.keys
        assert {k.params.prompt for k in changed.keys} == {"a lighthouse at dawn"}


async def test_all_adopted_done_so_continue_submits_nothing(farm):
    async with running(farm) as h:
        s, drafts = await drafts_with_vote(h)
        await h.rec.wait_for(lambda r: len(spec_finished(r)) == 3)
        spec_ids = {e.job_id for e in spec_finished(h.rec)}
        # Nothing speculative reached a stage: no job event of it carried a stage.
        assert all(e.stage_id is None for e in spec_finished(h.rec))
        assert any(isinstance(e, SpeculationChanged) and e.active for e in h.rec.events)
        refined = await h.svc.advance(s.id, "alice")
        done = await h.current_done(s.id)
        assert done.id == refined.id and done.delivered == 3
        assert {im.image.id for im in done.images} == spec_ids, "every image of the stage is an adopted job"
        assert not [e for e in h.rec.of(JobQueued) if e.batch_id == refined.id], "no job had to be submitted"
        finished_here = [e for e in h.rec.of(JobFinished) if e.stage_id == refined.id]
        assert {e.job_id for e in finished_here} == spec_ids, "the front end hears each adopted image as usual"
        assert all(im.image.parent_id == drafts.image(1).image.id for im in done.images)
        stats = h.orch.speculation_stats()
        assert stats.adopted == 3 and stats.useful_gpu_s > 0 and stats.wasted_gpu_s == 0


async def test_changed_votes_cancel_unmatched_and_their_images_never_reach_a_stage(farm):
    async with running(farm) as h:
        s, drafts = await drafts_with_vote(h)
        await h.rec.wait_for(lambda r: len(spec_finished(r)) == 3)
        old = {e.job_id for e in spec_finished(h.rec)}
        await h.svc.vote(s.id, drafts.image(1).image.id, "alice", None)
        await h.svc.vote(s.id, drafts.image(4).image.id, "alice", 1)
        await h.rec.wait_for(lambda r: len(spec_finished(r)) == 6)
        new = {e.job_id for e in spec_finished(h.rec)} - old
        refined = await h.svc.advance(s.id, "alice")
        done = await h.current_done(s.id)
        ids = {im.image.id for im in done.images}
        assert ids == new and not ids & old
        assert all(im.image.parent_id == drafts.image(4).image.id for im in done.images)
        for stage in (drafts, done):
            view = await h.svc.stage(stage.id)
            assert not {im.image.id for im in view.images} & old
        for job_id in old:
            job = await h.db.get_job(job_id)
            assert job.stage_id is None if hasattr(job, "stage_id") else job.spec.stage_id is None
        stats = h.orch.speculation_stats()
        assert stats.adopted == 3 and stats.cancelled == 3 and stats.wasted_gpu_s > 0
        assert refined.id == done.id
