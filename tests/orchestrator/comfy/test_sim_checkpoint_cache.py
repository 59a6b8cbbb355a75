"""
The simulator's checkpoint model: what a prompt pays for its checkpoint, given what the node's cache kept.

Loaded: nothing. Kept in the execution cache (a loader of it was in the last prompt, run or not): a swap-in.
Neither: a full load. A loader no output depends on is validated only for its class, never run, and keeps its
earlier output cached (ComfyUI's classic cache keys every node of a prompt and drops only the keys it lacks).
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.comfy.protocol import Executing, ExecutionCached, ExecutionInterrupted, ExecutionSuccess
from orchestrator.errors import PromptRejected
from tests.orchestrator.comfy import SD15, SDXL, collect, txt2img

pytestmark = pytest.mark.timeout(60)


def keep(graph: dict[str, Any], ckpt: str, node_id: str = "keep") -> dict[str, Any]:
    """The graph plus a loader of `ckpt` that nothing links to."""
    return {**graph, node_id: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}


async def run(client, graph):
    accepted = await client.submit(graph)
    return await collect(client.watch(accepted.prompt_id))


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
