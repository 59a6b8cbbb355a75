"""
Keep-alive: idle-lane prompts keep the checkpoint of a node's last real work in ComfyUI's cache.

Through the simulated farm on loopback: what the prompts sent to the nodes contain (read back from the nodes'
/history), what the nodes and the registry say they hold, and what another user's drafts pay after speculative
SDXL work (a swap-in, or nothing on a card with room for both; never a load). Plus the pure parts: the router's
load cost and the registry's bookkeeping.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from orchestrator.config import Config, HealthSettings, SpeculationSettings, parse_nodes, parse_settings
from orchestrator.errors import ConfigError
from orchestrator.events import EventBus, JobFinished, JobProgress, JobQueued, JobStarted
from orchestrator.farm import router
from orchestrator.farm.registry import Registry
from orchestrator.farm.speculative import is_speculative_batch
from orchestrator.farm.warmup import warmup_graph, with_keep_alive
from orchestrator.models import Family, GenerationParams, JobSpec, Mode, NodeStats, TaskKind
from orchestrator.service import GenerateRequest
from orchestrator.sessions.models import Flow, SessionRequest
from orchestrator.workflows import is_link
from tests.orchestrator.farm import TIME_SCALE, sim_farm
from tests.orchestrator.sessions.conftest import running, serve, small_config
from tests.orchestrator.test_router import NODES, job, views

pytestmark = pytest.mark.timeout(90)


def dangling_loaders(graph: dict[str, Any]) -> set[str]:
    """The checkpoints of the loaders in `graph` that nothing links to."""
    linked = {str(v[0]) for n in graph.values() for v in n["inputs"].values() if is_link(v)}
    return {
        n["inputs"]["ckpt_name"]
        for nid, n in graph.items()
        if n["class_type"] == "CheckpointLoaderSimple" and nid not in linked
    }


async def sent_graph(config: Config, node_id: str, prompt_id: str) -> dict[str, Any]:
    """The graph a node was given for a prompt, as its /history lists it."""
    node = next(n for n in config.nodes if n.id == node_id)
    async with httpx.AsyncClient(base_url=node.base_url, timeout=10) as http:
        entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    graph: dict[str, Any] = entry["prompt"][2]
    return graph


def speculation(config: Config, *, keep_alive: bool = True, refined_steps: int | None = None) -> Config:
    cfg = config.with_settings(speculation=SpeculationSettings(settle_s=0.0, keep_alive=keep_alive))
    if refined_steps is None:
        return cfg
    stages = cfg.settings.funnel.stages
    slow = (stages[0], replace(stages[1], steps=refined_steps), *stages[2:])
    return cfg.with_settings(funnel=replace(cfg.settings.funnel, stages=slow))


# --- through the farm ------------------------------------------------------------------------------------------


async def test_idle_lane_prompts_keep_the_drafts_checkpoint_and_jobs_are_adopted_unchanged(tmp_path):
    config = speculation(small_config(tmp_path))
    sd15, sdxl = config.settings.checkpoint_for(Family.SD15), config.settings.checkpoint_for(Family.SDXL)
    async with sim_farm(config, TIME_SCALE) as (sim, bound), running(bound) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse --seed 7"))
        drafts = await h.current_done(s.id)
        await h.svc.vote(s.id, drafts.image(1).image.id, "alice", 1)
        predicted = await h.orch._engine.speculation.predict(s.id)
        assert predicted is not None

        def spec_done(r) -> set[str]:
            return {e.job_id for e in r.of(JobFinished) if is_speculative_batch(e.batch_id)}

        await h.rec.wait_for(lambda r: len(spec_done(r)) == 3)
        kept_on: set[str] = set()
        for job_id in spec_done(h.rec):
            row = await h.db.get_job(job_id)
            assert row is not None and row.node_id is not None and row.prompt_id is not None
            graph = await sent_graph(bound, row.node_id, row.prompt_id)
            assert row.params.checkpoint == sdxl
            assert dangling_loaders(graph) == {sd15}, "the drafts' checkpoint rides along, linked to nothing"
            assert sim.simulators[row.node_id].stats.cached_checkpoints == {sd15, sdxl}
            kept_on.add(row.node_id)
        # Every speculative job ran where drafts (real work, SD 1.5) ran before.
        status = {n.id: n for n in h.orch.farm_status()}
        for nid in kept_on:
            assert status[nid].loaded_checkpoint == sdxl and status[nid].kept_checkpoint == sd15
        # The warm-ups carried it too.
        for nid in kept_on:
            records = sim.simulators[nid].stats.prompts
            warm = [
                g
                for g in [await sent_graph(bound, nid, r.prompt_id) for r in records]
                if any(n["class_type"] == "PreviewImage" for n in g.values())
            ]
            assert warm and all(dangling_loaders(g) == {sd15} for g in warm)

        # The specs are untouched, so Continue adopts every job and submits nothing.
        refined = await h.svc.advance(s.id, "alice")
        done = await h.current_done(s.id)
        assert {im.image.id for im in done.images} == spec_done(h.rec)
        assert not [e for e in h.rec.of(JobQueued) if e.batch_id == refined.id]
        assert {(await h.db.get_job(j)).spec.params for j in spec_done(h.rec)} == {k.params for k in predicted.keys}


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_another_users_drafts_after_speculative_sdxl_pay_a_swap_or_nothing_never_a_load(tmp_path, keep_alive):
    config = speculation(small_config(tmp_path), keep_alive=keep_alive, refined_steps=200)
    async with sim_farm(config, 0.05) as (sim, bound), running(bound) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse --seed 3"))
        drafts = await h.current_done(s.id)
        await h.svc.vote(s.id, drafts.image(1).image.id, "alice", 1)

        def sampling(r) -> set[str]:
            """Nodes where a speculative job's sampler runs (its checkpoint is loaded)."""
            return {e.node_id for e in r.of(JobProgress) if is_speculative_batch(e.batch_id)}

        await h.rec.wait_for(lambda r: len(sampling(r)) >= 2)
        holding_sdxl = sampling(h.rec)
        bob = GenerateRequest("a red fox in the snow", family=Family.SD15, count=8, user_id="bob")
        other = await h.svc.submit(h.svc.build_specs(bob))
        result = await h.svc.wait_batch(other)
        assert len(result.images) == 8 and not result.failed
        bobs = {j.prompt_id for j in await h.db.batch_jobs(other)}
        first = {}
        for nid in holding_sdxl:
            records = [r for r in sim.simulators[nid].stats.prompts if r.prompt_id in bobs]
            if records:
                first[nid] = records[0]
        assert first, "the other user's drafts went to the cards that were speculating"
        for nid, rec in first.items():
            if keep_alive:
                # Kept: never read from disk. A card with room for SDXL and SD 1.5 (12 and 16 GB here) never
                # let SD 1.5's weights go; the 8 GB one moves them back.
                roomy = sim.simulators[nid].node.vram_gb >= 12
                assert not rec.checkpoint_loaded and rec.checkpoint_swapped is not roomy, nid
            else:
                assert rec.checkpoint_loaded and not rec.checkpoint_swapped, nid
        # Each card the other user's drafts took from speculation stopped its speculative run once: every card
        # seen sampling one did, and no card more than once. A third card may have started one too, either still
        # loading its checkpoint when the drafts came (then preempted as well) or once the drafts were all
        # placed (then nothing real waited for it): between the two bounds.
        started = {e.node_id for e in h.rec.of(JobStarted) if is_speculative_batch(e.batch_id)}
        took = {nid for nid in started if any(r.prompt_id in bobs for r in sim.simulators[nid].stats.prompts)}
        assert len(first) <= h.orch.speculation_stats().preempted <= len(took)


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_an_upscale_keeps_the_cards_checkpoint_for_its_next_real_work(tmp_path, keep_alive):
    # One card (the only one that upscales): an SDXL image, its upscale, then SDXL again.
    config = speculation(small_config(tmp_path), keep_alive=keep_alive)
    config = replace(config, nodes=tuple(n for n in config.nodes if n.id == "gpu-premium"))
    sdxl = config.settings.checkpoint_for(Family.SDXL)
    async with sim_farm(config, TIME_SCALE) as (sim, bound), running(bound) as h:
        node = sim.simulators["gpu-premium"]

        async def one(spec: JobSpec) -> Any:
            batch = await h.svc.submit([spec])
            result = await h.svc.wait_batch(batch)
            assert len(result.images) == 1 and not result.failed
            row = await h.db.get_job(result.images[0].id)
            return result.images[0], next(r for r in node.stats.prompts if r.prompt_id == row.prompt_id)

        req = GenerateRequest("a lighthouse", family=Family.SDXL, task=TaskKind.PREMIUM, seed=1)
        image, first = await one(h.svc.build_specs(req)[0])
        assert first.checkpoint_loaded
        up = GenerationParams(
            prompt=image.prompt, family=Family.SDXL, checkpoint=sdxl, width=image.width, height=image.height,
            steps=1, seed=image.seed, mode=Mode.UPSCALE, init_image=image.path,
            upscale_model=config.settings.upscale_model,
        )  # fmt: skip
        _, upscaled = await one(JobSpec(up, TaskKind.UPSCALE))
        graph = await sent_graph(bound, "gpu-premium", upscaled.prompt_id)
        status = {n.id: n for n in h.svc.farm_status()}["gpu-premium"]
        if keep_alive:
            assert dangling_loaders(graph) == {sdxl}, "the upscale's prompt names the card's checkpoint"
            assert status.loaded_checkpoint == sdxl, "still on the card: the router prices it at nothing"
        else:
            assert dangling_loaders(graph) == set()
            assert status.loaded_checkpoint is None, "ComfyUI's cache dropped its loader: nothing is held"
        _, again = await one(h.svc.build_specs(replace(req, seed=2))[0])
        if keep_alive:
            assert not again.checkpoint_loaded and not again.checkpoint_swapped
        else:
            assert again.checkpoint_loaded, "read from disk again after the upscale"


# --- the pure parts -----------------------------------------------------------------------------------------------


def test_warmup_graph_keeps_a_checkpoint_only_when_asked():
    plain = warmup_graph("xl.safetensors")
    assert dangling_loaders(plain) == set()
    kept = warmup_graph("xl.safetensors", "v15.safetensors")
    assert dangling_loaders(kept) == {"v15.safetensors"}
    assert {k: v for k, v in kept.items() if k in plain} == plain
    graph = {"3": {"class_type": "KSampler", "inputs": {}}, "9": {"class_type": "SaveImage", "inputs": {}}}
    out = with_keep_alive(graph, "v15.safetensors")
    assert graph == {"3": {"class_type": "KSampler", "inputs": {}}, "9": {"class_type": "SaveImage", "inputs": {}}}
    assert set(out) == {"3", "9", "10"}, "a fresh node id; the caller's graph is not changed"


def test_load_cost_prices_a_kept_checkpoint_at_the_swap():
    assert router.load_cost("a", "a", None, 5.0, 0.5) == 0.0
    assert router.load_cost("a", "b", "a", 5.0, 0.5) == 0.5
    assert router.load_cost("a", "b", "c", 5.0, 0.5) == 5.0
    assert router.load_cost("a", "b", "a", 0.3, 0.5) == 0.3, "never more than a load"
    assert router.load_cost("", "b", None, 5.0, 0.5) == 0.0


def test_router_sends_drafts_to_the_card_that_kept_their_checkpoint():
    # Two equal cards hold another checkpoint; one kept the drafts' checkpoint in its cache.
    vs = [v for v in views(loaded={n.id: "xl" for n in NODES}) if v.node_id in ("gpu-quality", "gpu-standard")]
    cheap = "gpu-standard"
    vs = [replace(v, kept_checkpoint="a" if v.node_id == cheap else None, swap_seconds=0.1) for v in vs]
    vs = [replace(v, config=replace(v.config, tier=vs[0].config.tier)) for v in vs]
    j = job(0, ckpt="a")
    assert router.choose_job(cheap, [j], vs) is j
    assert router.choose_job("gpu-quality", [j], vs) is None


def registry() -> Registry:
    return Registry(tuple(NODES), HealthSettings(), EventBus())


def test_registry_keeps_only_what_the_node_held_and_real_work_drops_it():
    reg = registry()
    nid = NODES[0].id
    st: NodeStats = reg.get(nid).stats
    reg.record_checkpoint(nid, "a", real=True)
    assert (st.loaded_checkpoint, st.kept_checkpoint, st.last_real_checkpoint) == ("a", None, "a")
    reg.record_checkpoint(nid, "xl", keep_alive="a")  # a warm-up or speculative run keeping "a"
    assert (st.loaded_checkpoint, st.kept_checkpoint, st.last_real_checkpoint) == ("xl", "a", "a")
    reg.record_checkpoint(nid, "xl", keep_alive="a")
    assert st.kept_checkpoint == "a", "named again, kept again"
    reg.record_checkpoint(nid, "xl", keep_alive="zz")
    assert st.kept_checkpoint is None, "a checkpoint the node never held is not kept, and 'a' was not named"
    reg.record_checkpoint(nid, "a", real=True)
    reg.record_checkpoint(nid, "xl", keep_alive="a")
    reg.record_checkpoint(nid, "a", real=True)
    assert (st.loaded_checkpoint, st.kept_checkpoint) == ("a", None), "a real prompt names one loader"


def test_a_prompt_without_a_checkpoint_keeps_only_what_it_keeps_alive():
    reg = registry()
    nid = NODES[0].id
    st: NodeStats = reg.get(nid).stats
    reg.record_checkpoint(nid, "xl", real=True)
    reg.record_checkpoint(nid, None, keep_alive="xl")  # an upscale keeping the final's checkpoint
    assert (st.loaded_checkpoint, st.kept_checkpoint, st.last_real_checkpoint) == ("xl", None, "xl")
    reg.record_checkpoint(nid, None)  # one keeping nothing: the cache drops the loader, the model is freed
    assert (st.loaded_checkpoint, st.kept_checkpoint) == (None, None)
    reg.record_checkpoint(nid, "a", real=True)
    reg.record_checkpoint(nid, "xl", keep_alive="a")  # a speculative run keeping "a"
    reg.record_checkpoint(nid, None, keep_alive="a")
    assert (st.loaded_checkpoint, st.kept_checkpoint) == (None, "a"), "xl dropped; 'a' still kept"
    assert reg.switch_estimate(nid, "a", st.loaded_checkpoint, st.kept_checkpoint) == reg.swap_estimate(nid)


def test_swap_estimate_is_learned_then_shared_then_defaulted():
    reg = registry()
    a, b = NODES[0].id, NODES[1].id
    assert reg.swap_estimate(a) == router.DEFAULT_SWAP_SECONDS
    reg.record_swap(a, 0.2)
    assert reg.swap_estimate(a) == 0.2 and reg.swap_estimate(b) == 0.2
    reg.record_checkpoint(b, "xl", real=True)
    assert reg.switch_estimate(b, "a", "xl", "a") == 0.2
    assert reg.switch_estimate(b, "a", "xl", None) == reg.load_estimate(b)


def test_keep_alive_setting_and_the_sims_swap_time_parse_with_their_defaults():
    assert parse_settings({}, env={}).speculation.keep_alive is True
    assert parse_settings({"speculation": {"keep_alive": False}}, env={}).speculation.keep_alive is False
    with pytest.raises(ConfigError, match=r"settings\.yaml: speculation\.keep_alive"):
        parse_settings({"speculation": {"keep_alive": "sometimes"}}, "settings.yaml", env={})
    node = {"id": "a", "tier": "draft", "host": "h", "capabilities": ["sd15"], "sim": {}}
    sim = parse_nodes({"nodes": [node]}, "gpus.yaml")[0].sim
    assert sim is not None and sim.checkpoint_swap_seconds == 0.5
    node["sim"] = {"checkpoint_swap_seconds": 0.2}
    sim = parse_nodes({"nodes": [node]}, "gpus.yaml")[0].sim
    assert sim is not None and sim.checkpoint_swap_seconds == 0.2


async def test_an_upscale_is_real_work_but_leaves_the_checkpoint_to_keep_alive_as_it_was(tmp_path):
    config = small_config(tmp_path)
    sd15 = config.settings.checkpoint_for(Family.SD15)
    async with serve(config) as bound, running(bound) as h:
        drafts = await h.svc.wait_batch(await h.svc.generate(GenerateRequest("a lighthouse", count=8)))
        assert len(drafts.images) == 8
        image = next(im for im in drafts.images if im.node_id == "gpu-premium")
        params = GenerationParams(
            prompt="x",
            family=Family.SD15,
            mode=Mode.UPSCALE,
            init_image=image.path,
            upscale_model=config.settings.upscale_model,
            width=image.width,
            height=image.height,
        )
        up = await h.svc.wait_batch(await h.svc.submit([JobSpec(params=params, task=TaskKind.UPSCALE)]))
        assert len(up.images) == 1 and up.images[0].node_id == "gpu-premium"
        assert h.orch.registry.get("gpu-premium").stats.last_real_checkpoint == sd15
