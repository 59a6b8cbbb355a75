"""Voting time: speculative next stages on the simulated farm (prediction, ramp, adoption in any state, preemption)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from orchestrator.config import SpeculationSettings, parse_settings
from orchestrator.errors import ConfigError
from orchestrator.events import JobFailed, JobFinished, JobQueued, JobStarted, SpeculationChanged
from orchestrator.farm.speculative import is_speculative_batch
from orchestrator.models import Family, GenerationParams, JobSpec, TaskKind, Tier
from orchestrator.service import GenerateRequest
from orchestrator.sessions.models import Flow, SessionRequest
from orchestrator.sessions.speculation import Allowance, allowance
from tests.orchestrator.farm import TIME_SCALE, sim_farm
from tests.orchestrator.sessions.conftest import running, serve, small_config

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path):
    """Speculation on, with no settling wait and no ramp: the whole prediction is submitted as soon as it is known."""
    return small_config(tmp_path).with_settings(speculation=SpeculationSettings(settle_s=0.0, ramp=0.0))


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
            assert job.spec.stage_id is None, "a dropped speculative image belongs to no stage"
        stats = h.orch.speculation_stats()
        assert stats.adopted == 3 and stats.cancelled == 3 and stats.wasted_gpu_s > 0
        assert refined.id == done.id


def slow_refined(tmp_path, steps: int):
    """The small funnel with a refined stage of `steps` steps, speculation on without settling or ramp."""
    cfg = small_config(tmp_path).with_settings(speculation=SpeculationSettings(settle_s=0.0, ramp=0.0))
    stages = cfg.settings.funnel.stages
    slow = (stages[0], replace(stages[1], steps=steps), *stages[2:])
    return cfg.with_settings(funnel=replace(cfg.settings.funnel, stages=slow))


def real_sdxl(count: int, steps: int) -> GenerateRequest:
    return GenerateRequest("a busy harbour", family=Family.SDXL, count=count, steps=steps, user_id="bob")


async def test_queued_speculative_jobs_wait_for_real_work_and_are_adopted_queued(tmp_path):
    config = slow_refined(tmp_path, 4)
    async with serve(config, time_scale=0.05) as bound, running(bound) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse --seed 3"))
        drafts = await h.current_done(s.id)
        # Another user's real SDXL work fills every SDXL node, with more waiting.
        other = await h.svc.submit(h.svc.build_specs(real_sdxl(16, 20)))
        await h.rec.wait_for(lambda r: len({e.node_id for e in r.of(JobStarted) if e.batch_id == other}) == 3)
        await h.svc.vote(s.id, drafts.image(1).image.id, "alice", 1)
        await h.rec.wait_for(lambda r: len(spec_queued(r)) == 3)
        spec_ids = {e.job_id for e in spec_queued(h.rec)}
        assert not {e.job_id for e in h.rec.of(JobStarted)} & spec_ids, "real work waits: nothing speculative ran"
        assert any(j.batch_id == other for j in h.orch._sched.queued.values()), "still real work queued"
        refined = await h.svc.advance(s.id, "alice")
        done = await h.current_done(s.id)
        assert {im.image.id for im in done.images} == spec_ids, "adopted while queued"
        assert not [e for e in h.rec.of(JobQueued) if e.batch_id == refined.id], "nothing new was submitted"
        await h.svc.wait_batch(other)
        assert h.orch.speculation_stats().adopted == 3


async def test_running_speculative_job_is_adopted_mid_run_and_announced_as_the_stages(tmp_path):
    config = slow_refined(tmp_path, 40)
    async with serve(config, time_scale=0.05) as bound, running(bound) as h:
        s, _ = await drafts_with_vote(h)
        await h.rec.wait_for(lambda r: len(spec_queued(r)) == 3)
        spec_ids = {e.job_id for e in spec_queued(h.rec)}
        await h.rec.wait_for(lambda r: any(e.job_id in spec_ids for e in r.of(JobStarted)))
        started = {e.job_id for e in h.rec.of(JobStarted) if e.job_id in spec_ids}
        finished_before = {e.job_id for e in spec_finished(h.rec)}
        refined = await h.svc.advance(s.id, "alice")
        done = await h.current_done(s.id)
        assert {im.image.id for im in done.images} == spec_ids
        running_then = started - finished_before
        assert running_then, "at least one was running at Continue"
        for e in h.rec.of(JobFinished):
            if e.job_id in running_then:
                assert e.stage_id == refined.id and e.image.stage_id == refined.id, "announced as the stage's"
        assert not [e for e in h.rec.of(JobQueued) if e.batch_id == refined.id]


async def test_real_work_preempts_running_speculative_work(tmp_path):
    config = slow_refined(tmp_path, 200)
    async with serve(config, time_scale=0.05) as bound, running(bound) as h:
        s, _ = await drafts_with_vote(h)
        await h.rec.wait_for(lambda r: len(spec_queued(r)) == 3)
        spec_ids = {e.job_id for e in spec_queued(h.rec)}
        await h.rec.wait_for(lambda r: len({e.job_id for e in r.of(JobStarted) if e.job_id in spec_ids}) >= 2)
        other = await h.svc.submit(h.svc.build_specs(real_sdxl(3, 4)))
        result = await h.svc.wait_batch(other)
        assert len(result.images) == 3 and not result.failed
        stats = h.orch.speculation_stats()
        assert stats.preempted >= 2, "the speculative runs gave their nodes up"
        assert not spec_finished(h.rec), "no speculative image came before the real ones"
        # The preempted jobs went back to the idle-only lane; Continue still adopts all of them.
        refined = await h.svc.advance(s.id, "alice")
        await h.stage_done(refined.id, timeout=60)
        done = await h.svc.stage(refined.id)
        assert {im.image.id for im in done.images} == spec_ids
        assert not [e for e in h.rec.of(JobQueued) if e.batch_id == refined.id]
        counts = h.rec.finished_per_job()
        assert all(counts[j] == 1 for j in spec_ids), "each job ended exactly once"
        assert h.orch.speculation_stats().wasted_gpu_s > 0


@asynccontextmanager
async def warm_up_only(tmp_path):
    """Speculation off, warm-up on: the harness on its own simulated farm, the simulators, the SDXL checkpoint."""
    config = small_config(tmp_path).with_settings(speculation=SpeculationSettings(enabled=False, warmup=True))
    async with sim_farm(config, TIME_SCALE) as (sim, bound), running(bound) as h:
        yield h, sim, config.settings.checkpoint_for(Family.SDXL)


async def test_warm_up_loads_the_next_checkpoint_while_people_vote(tmp_path):
    # Speculation off, warm-up on: the refined stage after Continue finds its checkpoint loaded already.
    async with warm_up_only(tmp_path) as (h, sim, sdxl):
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse --seed 5"))
        drafts = await h.current_done(s.id)
        sdxl_nodes = {n.id for n in h.orch.farm_status() if "sdxl" in n.capabilities}

        def warmed() -> bool:
            return sum(1 for n in h.orch.farm_status() if n.loaded_checkpoint == sdxl) == len(sdxl_nodes)

        warmer = h.orch._sched.lane.warmer
        async with asyncio.timeout(30):
            while not warmed():
                warmer.changed.clear()
                if not warmed():
                    await warmer.changed.wait()
        assert h.orch.speculation_stats().warmups == len(sdxl_nodes)
        loads = {nid: sim.simulators[nid].stats.checkpoint_loads for nid in sdxl_nodes}
        assert not spec_queued(h.rec), "speculation is off: nothing speculative ran"
        await h.svc.vote(s.id, drafts.image(1).image.id, "alice", 1)
        await h.svc.advance(s.id, "alice")
        await h.current_done(s.id)
        after = {nid: sim.simulators[nid].stats.checkpoint_loads for nid in sdxl_nodes}
        assert after == loads, "the refined stage paid no checkpoint load"


async def test_a_warm_up_a_node_refuses_is_not_asked_again_until_the_next_stage(tmp_path):
    # The warm-up stands until real work is submitted and an idle node is warmed as it wakes; one the node refused
    # (here: the SDXL checkpoint, deleted from the nodes after they listed it) must not be sent again at each wake.
    async with warm_up_only(tmp_path) as (h, sim, sdxl):
        lane = h.orch._sched.lane
        for node in sim.simulators.values():
            node.checkpoints = tuple(c for c in node.checkpoints if c != sdxl)
        spec = JobSpec(params=GenerationParams(prompt="x", family=Family.SDXL, checkpoint=sdxl), task=TaskKind.STANDARD)
        assert lane.warm_up([spec]) > 0
        nodes = list(h.orch._sched.registry)
        async with asyncio.timeout(30):
            while any(lane.warmer.busy(n.id) for n in nodes):
                lane.warmer.changed.clear()
                await lane.warmer.changed.wait()
        refused = {nid for nid, ckpt in lane.warmer.gave_up if ckpt == sdxl}
        assert refused, "every node refused the checkpoint"
        for n in nodes:
            lane.idle(n)
        assert not any(lane.warmer.busy(n.id) for n in nodes), "a refused warm-up is not sent again"
        assert lane.warm_up([spec]) == len(refused), "the next stage's warm-up tries again"


async def test_a_card_busy_when_the_votes_open_is_warmed_up_once_it_is_idle(tmp_path):
    # The warm-up is asked for once per stage; a card still finishing something then must not be passed over.
    async with warm_up_only(tmp_path) as (h, sim, sdxl):
        lane = h.orch._sched.lane
        # An SD 1.5 image too large for the draft card keeps one of the SDXL cards busy on another checkpoint;
        # its card is wedged mid-run (the prompt waits at its next step) until we let it go.
        other = GenerateRequest("a fox", family=Family.SD15, width=1024, height=1024, steps=150)
        batch = await h.svc.submit(h.svc.build_specs(other))
        await h.rec.wait_for(lambda r: r.of(JobStarted))
        busy = h.rec.of(JobStarted)[0].node_id
        sim.simulators[busy].faults.wedge = True
        lane.warm_up(h.svc.build_specs(GenerateRequest("a lighthouse", family=Family.SDXL, count=3)))
        assert not lane.warmer.busy(busy), "busy: passed over for now"
        sim.simulators[busy].unwedge()
        await h.svc.wait_batch(batch)

        def holds() -> bool:
            return h.orch._sched.registry.get(busy).stats.loaded_checkpoint == sdxl

        async with asyncio.timeout(30):
            while not holds():
                lane.warmer.changed.clear()
                if not holds():
                    await lane.warmer.changed.wait()


async def test_no_speculation_when_off_for_the_server_or_the_session_rules_move_it_on(farm):
    async with running(farm) as h:
        spec = h.orch._engine.speculation
        s = await h.svc.create_session(
            SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse --seed 9", server_id="guild-1")
        )
        drafts = await h.current_done(s.id)
        await h.svc.vote(s.id, drafts.image(1).image.id, "alice", 1)
        assert await spec.predict(s.id) is not None
        assert await h.svc.server_speculation("guild-1")
        await h.svc.set_server_speculation("guild-1", False)
        assert not await h.svc.server_speculation("guild-1")
        assert await spec.predict(s.id) is None, "off for this server"
        assert await h.svc.server_speculation("guild-2"), "other servers keep it"
        await h.svc.set_server_speculation("guild-1", True)
        assert await spec.predict(s.id) is not None
        await h.svc.set_rules(s.id, "alice", quorum=3)
        assert await spec.predict(s.id) is None, "a quorum moves the session on by itself"
        await h.svc.set_rules(s.id, "alice")
        assert await spec.predict(s.id) is not None


async def test_speculation_off_globally_submits_nothing(tmp_path):
    config = small_config(tmp_path).with_settings(speculation=SpeculationSettings(enabled=False, warmup=False))
    async with serve(config) as bound, running(bound) as h:
        s, _ = await drafts_with_vote(h)
        assert await h.orch._engine.speculation.predict(s.id) is None
        refined = await h.svc.advance(s.id, "alice")
        await h.current_done(s.id)
        assert len([e for e in h.rec.of(JobQueued) if e.batch_id == refined.id]) == 3
        assert not spec_queued(h.rec) and h.orch.speculation_stats().submitted == 0


# --------------------------------------------------------------------------- the ramp


def test_allowance_grows_one_gpu_per_threshold_passed_and_is_whole_after_the_last():
    thresholds = [2.0, 0.5, 1.0]
    assert allowance(thresholds, 0.0) == Allowance(0, False, 0.5)
    assert allowance(thresholds, 0.5) == Allowance(1, False, 0.5)
    assert allowance(thresholds, 1.5) == Allowance(2, False, 0.5)
    assert allowance(thresholds, 2.0) == Allowance(3, True, None)
    assert allowance([], 5.0) == Allowance(0, False, None), "no GPU: nothing ever"


def test_ramp_setting_parses_and_rejects_a_negative():
    assert parse_settings({}, env={}).speculation.ramp == 1.0
    assert parse_settings({"speculation": {"ramp": 0.5}}, env={}).speculation.ramp == 0.5
    with pytest.raises(ConfigError) as e:
        parse_settings({"speculation": {"ramp": -1}}, "settings.yaml", env={})
    assert str(e.value).startswith("settings.yaml: speculation.ramp: expected a number >= 0")


#: the ramp tests run the simulator at this scale: a refined job takes 0.6 s on the fast GPU, 1.6 s on the slow one
RAMP_SCALE = 0.05


def ramp_config(tmp_path):
    """
    Two GPUs for a 6-job refined stage: the premium one and the standard one made a draft-tier card (its SDXL
    job takes 8/3 as long, by the router's estimate and in the simulator); the quality card runs drafts only.
    Default ramp, no settle time: the fast GPU may take a job once the prediction has held for its job time,
    the slow one (and the whole stage) once it has held for the slow one's.
    """
    cfg = small_config(tmp_path).with_settings(speculation=SpeculationSettings(settle_s=0.0))
    nodes = []
    for n in cfg.nodes:
        if n.id == "gpu-quality":
            n = replace(n, capabilities=("sd15",))
        elif n.id == "gpu-standard":
            assert n.sim is not None
            sim = replace(n.sim, seconds_per_step={**n.sim.seconds_per_step, Family.SDXL: 0.80})
            n = replace(n, tier=Tier.DRAFT, sim=sim)
        nodes.append(n)
    stages = cfg.settings.funnel.stages
    refined = replace(stages[1], count=6, steps=40)
    funnel = replace(cfg.settings.funnel, stages=(stages[0], refined, *stages[2:]))
    return cfg.with_nodes(tuple(nodes)).with_settings(funnel=funnel)


def submissions(r) -> list[list[str]]:
    """The speculative submissions in order, each the job ids of one batch."""
    out: dict[str, list[str]] = {}
    for e in spec_queued(r):
        out.setdefault(e.batch_id, []).append(e.job_id)
    return list(out.values())


def most_in_flight(r, jobs: set[str]) -> int:
    """The most of `jobs` queued or running at once, from the events in the order they were published."""
    in_flight: set[str] = set()
    most = 0
    for e in r.events:
        if isinstance(e, JobQueued) and e.job_id in jobs:
            in_flight.add(e.job_id)
            most = max(most, len(in_flight))
        elif isinstance(e, JobFinished | JobFailed):
            in_flight.discard(e.job_id)
    return most


async def test_young_prediction_gets_the_fast_gpu_only_and_the_whole_stage_once_it_has_held(tmp_path):
    async with serve(ramp_config(tmp_path), time_scale=RAMP_SCALE) as bound, running(bound) as h:
        s, _ = await drafts_with_vote(h)
        # No Continue: the prediction holding is enough for the whole stage to go in.
        await h.rec.wait_for(lambda r: len(spec_queued(r)) == 6)
        batches = submissions(h.rec)
        assert len(batches[0]) == 1, "young: one job, for the GPU whose job time it outlived first"
        assert len(batches) >= 2 and len(batches[-1]) >= 2, "the rest went in at once when it had held long enough"
        young = {j for b in batches[:-1] for j in b}
        assert most_in_flight(h.rec, young) == 1, "while young, one job in flight at a time"
        # Which card runs the one young job is the router's, from measured speeds that move under load: the ramp's
        # own property is how much runs at once (above).
        refined = await h.svc.advance(s.id, "alice")
        done = await h.current_done(s.id)
        assert {im.image.id for im in done.images} == {e.job_id for e in spec_queued(h.rec)}
        assert not [e for e in h.rec.of(JobQueued) if e.batch_id == refined.id], "all of it adopted"


async def test_a_changed_prediction_starts_the_ramp_again(tmp_path):
    async with serve(ramp_config(tmp_path), time_scale=RAMP_SCALE) as bound, running(bound) as h:
        s, drafts = await drafts_with_vote(h)
        await h.rec.wait_for(lambda r: len(spec_finished(r)) == 6)
        assert len(submissions(h.rec)[-1]) >= 2, "the first prediction held long enough for the whole stage"
        earlier = len(submissions(h.rec))
        # A second pick: half the stage now comes from image 2 (three new jobs; image 1's first three still match).
        await h.svc.vote(s.id, drafts.image(2).image.id, "bob", 1)
        await h.rec.wait_for(lambda r: len(spec_queued(r)) == 9)
        after = submissions(h.rec)[earlier:]
        assert len(after[0]) == 1, "young again: one job, however long the prediction before had held"
        assert most_in_flight(h.rec, {j for b in after[:-1] for j in b}) == 1
        refined = await h.svc.advance(s.id, "alice")
        done = await h.current_done(s.id)
        parents = sorted(im.image.parent_id for im in done.images)
        assert parents == sorted([drafts.image(1).image.id] * 3 + [drafts.image(2).image.id] * 3)
        assert not [e for e in h.rec.of(JobQueued) if e.batch_id == refined.id], "all of it adopted"
        stats = h.orch.speculation_stats()
        assert stats.adopted == 6 and stats.cancelled == 3, "image 1's last three were dropped at Continue"
