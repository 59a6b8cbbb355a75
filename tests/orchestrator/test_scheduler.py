"""The scheduler against the simulated farm: distribution, failover, faults, cancel and restart safety.

Each fault test asserts what was delivered, how many times, and by which node.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.comfy.sim import SimFarm, render as sim_render
from orchestrator.errors import NoCapableNode
from orchestrator.events import BatchDone, JobFinished, JobRetried, NodeHealthChanged
from orchestrator.farm.job_state import IllegalTransition, transition
from orchestrator.models import Family, GenerationParams, JobSpec, JobStatus, LoraSpec, Mode, TaskKind
from orchestrator.service import GenerateRequest, Orchestrator
from tests.orchestrator.farm import TIME_SCALE, Recorder, assert_exactly_once, db_of, farm_config, run_batch, store_of

pytestmark = pytest.mark.timeout(90)


async def test_twenty_drafts_spread_by_node_speed(tmp_path):
    # Its own farm at 10x the usual time scale: at 0.01 a sampler step (0.5 ms) is shorter than the event loop's
    # work per step with four simulators and the orchestrator in one process, so every node runs at the loop's
    # pace and the speeds the test is about disappear; at 5x a loaded machine (load 5-8) still evened them out
    # now and then (premium and draft 5 each).
    sim = SimFarm(farm_config(tmp_path), time_scale=TIME_SCALE * 10, ephemeral_ports=True)
    cfg = await sim.start()
    try:
        async with Orchestrator(cfg) as orch:
            rec, result = await run_batch(orch, 20, steps=40)
    finally:
        await sim.stop()
    assert_exactly_once(rec, result, 20)
    per_node = rec.per_node()
    assert set(per_node) == {"gpu-premium", "gpu-quality", "gpu-standard", "gpu-draft"}
    assert per_node["gpu-premium"] > per_node["gpu-draft"]
    for im in result.images:
        assert im.path.endswith(".png") and im.thumbnail.endswith(".jpg")


async def test_node_killed_mid_batch_loses_no_image(farm):
    sim, cfg = farm
    sim.simulators["gpu-quality"].faults.die_after = 2
    async with Orchestrator(cfg) as orch:
        rec, result = await run_batch(orch, 16)
        # The failed runs moved its work at once; the health checks see it down within their own interval, which
        # on a loaded machine may come after the batch is done.
        await rec.wait_for(
            lambda r: any(
                isinstance(e, NodeHealthChanged) and e.node_id == "gpu-quality" and not e.healthy for e in r.events
            )
        )
        assert not orch.registry.get("gpu-quality").stats.healthy
    assert_exactly_once(rec, result, 16)
    assert rec.retried_from()["gpu-quality"] >= 1
    # The dead node started at most its first two prompts and finished at most its first one.
    assert rec.per_node()["gpu-quality"] <= 1


async def test_hung_node_work_moves_elsewhere(farm):
    sim, cfg = farm
    sim.simulators["gpu-standard"].faults.hang_after = 1
    # Without backup copies, the stall timeout is what takes the job away from the hung node.
    cfg = cfg.with_settings(
        scheduler=cfg.settings.scheduler.__class__(stall_timeout_s=0.5, http_timeout_s=5.0, backups=False)
    )
    async with Orchestrator(cfg) as orch:
        rec, result = await run_batch(orch, 8)
    assert_exactly_once(rec, result, 8)
    moved = [e for e in rec.of(JobRetried) if e.from_node == "gpu-standard"]
    assert moved and "stalled" in moved[0].reason
    hung_job = moved[0].job_id
    assert next(im.node_id for im in result.images if im.id == hung_job) != "gpu-standard"


async def test_execution_error_is_retried_on_another_node(farm):
    sim, cfg = farm
    sim.simulators["gpu-premium"].faults.error_after = 1
    async with Orchestrator(cfg) as orch:
        rec, result = await run_batch(orch, 6)
    assert_exactly_once(rec, result, 6)
    retried = [e for e in rec.of(JobRetried) if e.from_node == "gpu-premium"]
    assert len(retried) == 1
    assert next(im.node_id for im in result.images if im.id == retried[0].job_id) != "gpu-premium"


async def test_error_on_every_attempt_fails_with_comfyuis_message(farm, tmp_path):
    sim, cfg = farm
    for s in sim.simulators.values():
        s.faults.error_after = 1
    cfg = cfg.with_settings(scheduler=cfg.settings.scheduler.__class__(max_attempts=2, stall_timeout_s=2.0))
    async with Orchestrator(cfg) as orch:
        _rec, result = await run_batch(orch, 1)
        job = (await db_of(orch).batch_jobs(result.batch_id))[0]
    assert result.images == [] and len(result.failed) == 1
    assert job.status is JobStatus.FAILED and job.attempt == 2
    assert "ComfyUI error" in job.error and "KSampler" in job.error
    assert len(set(job.failed_nodes)) == 2


async def test_dropped_websocket_still_delivers_once(farm):
    sim, cfg = farm
    for s in sim.simulators.values():
        s.faults.drop_ws_after = 1
    async with Orchestrator(cfg) as orch:
        rec, result = await run_batch(orch, 8)
    assert_exactly_once(rec, result, 8)


async def test_jobs_never_sent_to_a_down_node_and_it_takes_work_when_back(farm):
    sim, cfg = farm
    async with Orchestrator(cfg) as orch:
        rec = Recorder(orch.bus)
        sim.simulators["gpu-premium"].kill()
        await rec.wait_for(lambda r: any(isinstance(e, NodeHealthChanged) and not e.healthy for e in r.events))
        _, result = await run_batch(orch, 8)
        assert "gpu-premium" not in rec.started_on()
        assert len(result.images) == 8
        await sim.simulators["gpu-premium"].revive()
        await rec.wait_for(lambda r: any(isinstance(e, NodeHealthChanged) and e.healthy for e in r.events))
        # Enough work that loading a checkpoint on the revived node pays off (it comes back with none loaded).
        rec2, _result2 = await run_batch(orch, 12, steps=40)
        assert rec2.per_node()["gpu-premium"] >= 1
        await rec.close()


async def test_restart_mid_stage_delivers_everything_exactly_once(farm, database_url):
    _sim, cfg = farm
    if database_url:  # on PostgreSQL too: recovery reads the jobs back from either backend
        cfg = cfg.with_settings(storage=replace(cfg.settings.storage, database=database_url))
    orch = Orchestrator(cfg)
    await orch.start()
    rec = Recorder(orch.bus)
    batch = await orch.generate(GenerateRequest(prompt="restart me", count=12, seed=100))
    await rec.wait_for(lambda r: len(r.of(JobFinished)) >= 3)
    await orch.stop()
    await rec.close()
    first = rec.finished_per_job()

    orch2 = Orchestrator(cfg)
    rec2 = Recorder(orch2.bus)
    await orch2.start()
    result = await orch2.wait_batch(batch)
    jobs = await db_of(orch2).batch_jobs(batch)
    await rec2.close()
    await orch2.stop()
    second = rec2.finished_per_job()
    assert not set(first) & set(second), "an image was delivered again after the restart"
    assert len(first) + len(second) == 12
    assert len(result.images) == 12 and all(j.status is JobStatus.DONE for j in jobs)
    assert sorted(im.seed for im in result.images) == list(range(100, 112))


async def test_cancel_batch_stops_its_jobs(farm):
    _, cfg = farm
    async with Orchestrator(cfg) as orch:
        rec = Recorder(orch.bus)
        batch = await orch.generate(GenerateRequest(prompt="cancel me", count=30, seed=1, steps=50))
        await rec.wait_for(lambda r: len(r.of(JobFinished)) >= 1)
        cancelled = await orch.cancel_batch(batch)
        result = await orch.wait_batch(batch)
        await rec.wait_for(lambda r: any(isinstance(e, BatchDone) for e in r.events))
        await rec.close()
    assert cancelled >= 1
    assert len(result.images) + cancelled == 30
    assert all(j.status is JobStatus.CANCELLED for j in result.failed)


async def test_request_no_node_can_run_is_refused(farm):
    _, cfg = farm
    async with Orchestrator(cfg) as orch:
        with pytest.raises(NoCapableNode, match="sdxl at 2048x2048"):
            await orch.generate(GenerateRequest(prompt="x", family=Family.SDXL, width=2048, height=2048))


def test_illegal_transitions_are_rejected():
    from orchestrator.models import GenerationParams, Job, JobSpec

    j = Job(id="a", batch_id="b", spec=JobSpec(GenerationParams(prompt="x"), TaskKind.DRAFT))
    done = transition(transition(j, JobStatus.SUBMITTED), JobStatus.DONE)
    assert done.finished_at is not None
    with pytest.raises(IllegalTransition):
        transition(done, JobStatus.QUEUED)
    with pytest.raises(IllegalTransition):
        transition(j, JobStatus.RUNNING)


async def test_checkpoint_or_lora_missing_on_every_node_is_refused_naming_the_file(farm):
    _, cfg = farm
    async with Orchestrator(cfg) as orch:
        with pytest.raises(NoCapableNode) as e:
            await orch.generate(GenerateRequest(prompt="x", checkpoint="nowhere.safetensors"))
        assert "nowhere.safetensors" in e.value.user_message
        assert "v1-5-pruned-emaonly.safetensors" in e.value.user_message
        with pytest.raises(NoCapableNode, match="LoRA missing_lora"):
            await orch.generate(GenerateRequest(prompt="x", loras=(LoraSpec("missing_lora"),)))


async def test_prompts_reach_a_node_in_launch_order_when_uploads_finish_out_of_order(farm, tmp_path):
    # The scheduler's estimates (a checkpoint load above all) assume a node runs its jobs in the order it took
    # them; an img2img whose upload finishes late must not be overtaken by the next one.
    sim, cfg = farm
    premium = sim.simulators["gpu-premium"]
    async with Orchestrator(cfg) as orch:
        first, second = (sim_render.encode_png(sim_render.render_txt2img("x", seed, 64, 64)) for seed in (1, 2))
        specs = []
        for i, data in enumerate((first, second), start=1):
            source = await store_of(orch).save(None, f"source{i}", data)
            params = GenerationParams(
                prompt="x",
                family=Family.SDXL,
                mode=Mode.UPSCALE,
                init_image=str(source.path),
                upscale_model=cfg.settings.upscale_model,
                width=64,
                height=64,
            )
            specs.append(JobSpec(params=params, task=TaskKind.UPSCALE, index=i))
        premium.faults.hold_upload_of = first
        batch = await orch.submit(specs)
        result = await orch.wait_batch(batch)
        assert len(result.images) == 2 and not result.failed
        jobs = {j.prompt_id: j for j in await db_of(orch).batch_jobs(batch)}
    arrived = [jobs[r.prompt_id].spec.index for r in premium.stats.prompts if r.prompt_id in jobs]
    assert arrived == [1, 2]
    assert premium.faults.hold_upload_of is None, "the first upload was held"
