"""
The simulator's checkpoint model: what a prompt pays for its checkpoint, given what the node's cache kept.

Loaded: nothing. Kept in the execution cache (a loader of it was in the last prompt, run or not): a swap-in.
Neither: a full load. A loader no output depends on is validated only for its class, never run, and keeps its
earlier output cached (ComfyUI's classic cache keys every node of a prompt and drops only the keys it lacks).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.protocol import Executing, ExecutionCached, ExecutionInterrupted, ExecutionSuccess
from orchestrator.comfy.sim import ComfySimulator
from orchestrator.comfy.sim.vram import Vram
from orchestrator.errors import PromptRejected
from tests.orchestrator.comfy import SCALE, SD15, SDXL, collect, node_config, txt2img

pytestmark = pytest.mark.timeout(60)


def keep(graph: dict[str, Any], ckpt: str, node_id: str = "keep") -> dict[str, Any]:
    """The graph plus a loader of `ckpt` that nothing links to."""
    return {**graph, node_id: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}


async def run(client, graph):
    accepted = await client.submit(graph)
    return await collect(client.watch(accepted.prompt_id))


async def run_record(sim, client, graph):
    """Run a graph; the simulator's record of it."""
    accepted = await client.submit(graph)
    await collect(client.watch(accepted.prompt_id))
    return next(r for r in sim.stats.prompts if r.prompt_id == accepted.prompt_id)


def costs(sim) -> tuple[int, int]:
    return sim.stats.checkpoint_loads, sim.stats.checkpoint_swaps


async def test_a_kept_checkpoint_costs_a_swap_and_an_unkept_one_a_full_load(client, sim):
    await run(client, txt2img(ckpt=SD15))
    assert costs(sim) == (1, 0) and sim.stats.cached_checkpoints == {SD15}

    # SDXL with a dangling SD 1.5 loader: SDXL is loaded from disk, SD 1.5's loader output stays cached.
    events = await run(client, keep(txt2img(ckpt=SDXL, seed=2), SD15))
    assert isinstance(events[-1], ExecutionSuccess)
    assert costs(sim) == (2, 0) and sim.stats.loaded_checkpoint == SDXL
    assert sim.stats.cached_checkpoints == {SD15, SDXL}
    cached = next(e for e in events if isinstance(e, ExecutionCached))
    assert "keep" in cached.nodes, "listed as cached, as ComfyUI lists every node of the prompt it holds"
    assert "keep" not in {e.node for e in events if isinstance(e, Executing)}, "a dangling node never runs"

    # Back to SD 1.5: its loader output was kept, so only the weights move back.
    await run(client, txt2img(ckpt=SD15, seed=3))
    assert costs(sim) == (2, 1) and sim.stats.loaded_checkpoint == SD15
    assert sim.stats.cached_checkpoints == {SD15}, "SDXL's loader was not in that prompt: dropped"

    # SDXL again: nothing kept it, a full load; and SD 1.5 after it, nothing kept either.
    await run(client, txt2img(ckpt=SDXL, seed=4))
    assert costs(sim) == (3, 1)
    await run(client, txt2img(ckpt=SD15, seed=5))
    assert costs(sim) == (4, 1)


async def test_a_loaded_checkpoint_costs_nothing(client, sim):
    await run(client, txt2img(ckpt=SD15))
    await run(client, keep(txt2img(ckpt=SD15, seed=2), SDXL))
    await run(client, txt2img(ckpt=SD15, seed=3))
    assert costs(sim) == (1, 0)
    assert sim.stats.cached_checkpoints == {SD15}


async def test_keeping_a_checkpoint_the_node_never_held_does_nothing(client, sim):
    await run(client, keep(txt2img(ckpt=SDXL), SD15))
    assert costs(sim) == (1, 0) and sim.stats.cached_checkpoints == {SDXL}
    await run(client, txt2img(ckpt=SD15, seed=2))
    assert costs(sim) == (2, 0), "no loader output of SD 1.5 existed to keep: a full load"


async def test_an_interrupted_prompt_still_keeps_what_it_named(client, sim):
    await run(client, txt2img(ckpt=SD15))
    sim.faults.hang_after = 2
    accepted = await client.submit(keep(txt2img(ckpt=SDXL, seed=2), SD15))
    watch = client.watch(accepted.prompt_id)
    async for ev in watch:
        if isinstance(ev, Executing) and ev.node == "3":
            break
    await client.interrupt(accepted.prompt_id)
    assert isinstance((await collect(watch))[-1], ExecutionInterrupted)
    assert sim.stats.cached_checkpoints == {SD15, SDXL}
    await run(client, txt2img(ckpt=SD15, seed=3))
    assert costs(sim) == (2, 1)


async def test_free_drops_what_the_cache_kept(client, sim):
    await run(client, txt2img(ckpt=SD15))
    await run(client, keep(txt2img(ckpt=SDXL, seed=2), SD15))
    await client.free(unload_models=True, free_memory=True)
    assert sim.stats.cached_checkpoints == frozenset()
    await run(client, txt2img(ckpt=SD15, seed=3))
    assert costs(sim) == (3, 0)


async def test_dangling_nodes_are_checked_for_their_class_only(client, sim):
    # ComfyUI validates what an output depends on; elsewhere only that each class exists.
    graph = keep(txt2img(), "no-such-checkpoint.safetensors")
    graph["loose"] = {"class_type": "VAEDecode", "inputs": {"samples": ["nowhere", 0]}}
    graph["loop_a"] = {"class_type": "VAEDecode", "inputs": {"samples": ["loop_b", 0], "vae": ["4", 2]}}
    graph["loop_b"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["loop_a", 0], "vae": ["4", 2]}}
    assert isinstance((await run(client, graph))[-1], ExecutionSuccess)
    assert sim.stats.cached_checkpoints == {SD15}

    unknown = keep(txt2img(seed=2), SD15)
    unknown["keep"]["class_type"] = "CheckpointLoaderTurbo"
    with pytest.raises(PromptRejected, match="CheckpointLoaderTurbo does not exist"):
        await client.submit(unknown)


@pytest.fixture
async def roomy():
    """A 16 GB card (the test node is 8 GB): SD 1.5 and SDXL fit on it together, FLUX does not fit beside them."""
    s = ComfySimulator(replace(node_config(), vram_gb=16), time_scale=SCALE, port=0)
    await s.start()
    c = ComfyClient(s.base_url, name="gpu-roomy", ws_backoff=(0.01, 0.05))
    await c.start()
    assert await c.wait_connected(5)
    yield s, c
    await c.close()
    await s.stop()


async def test_a_kept_checkpoint_on_a_card_with_room_for_both_moves_nothing(roomy):
    sim, client = roomy
    await run(client, txt2img(ckpt=SD15))
    await run(client, keep(txt2img(ckpt=SDXL, seed=2), SD15))
    # ComfyUI frees VRAM only as far as the next model needs it: SD 1.5's weights never left the card.
    rec = await run_record(sim, client, keep(txt2img(ckpt=SD15, seed=3), SDXL))
    assert costs(sim) == (2, 0) and not rec.checkpoint_swapped and not rec.checkpoint_loaded
    assert sim.vram.holds(SD15) and sim.vram.holds(SDXL)
    stats = await client.system_stats()
    assert stats.devices[0].vram_free < 16 * 1024**3 - int((2.1 + 6.9) * 1024**3), "/system_stats shows both held"

    # A prompt without SDXL's loader drops its output from the cache: the model is freed, VRAM with it.
    await run(client, txt2img(ckpt=SD15, seed=4))
    assert not sim.vram.holds(SDXL)
    await run(client, txt2img(ckpt=SDXL, seed=5))
    assert costs(sim) == (3, 0), "nothing kept SDXL: read from disk again"


async def test_a_model_too_big_to_share_the_card_pushes_the_others_out(roomy):
    sim, client = roomy
    await run(client, txt2img(ckpt=SD15))
    await run(client, keep(txt2img(ckpt=SDXL, seed=2), SD15))
    sim.vram.use("flux1-dev-fp8.safetensors")  # 17 GB: does not fit beside anything, here not even alone
    assert not sim.vram.holds(SD15) and not sim.vram.holds(SDXL)
    # SD 1.5's loader output is still cached (the last prompt named it), so its weights move back: a swap.
    await run(client, txt2img(ckpt=SD15, seed=3))
    assert costs(sim) == (2, 1)


def test_vram_frees_the_checkpoint_used_longest_ago_first():
    vram = Vram(12)  # room for SDXL plus one SD 1.5, not two
    vram.use("a-v1-5.safetensors")
    vram.use("b-v1-5.safetensors")
    vram.use("a-v1-5.safetensors")  # a is now the more recently used
    vram.use(SDXL)
    assert vram.holds(SDXL) and vram.holds("a-v1-5.safetensors") and not vram.holds("b-v1-5.safetensors")
    assert vram.used_gb == pytest.approx(6.9 + 2.1)
    unset = Vram(0)  # a node whose vram_gb is not configured holds only what it used last
    unset.use(SD15)
    unset.use(SDXL)
    assert unset.holds(SDXL) and not unset.holds(SD15)
