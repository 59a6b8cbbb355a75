"""
Warm-up: an idle node loads the checkpoint the next stage will need, so that stage pays no load.

The cheapest graph ComfyUI accepts that makes a node hold a checkpoint: ComfyUI refuses a prompt without an output
node (`prompt_no_outputs`) and runs only what an output node depends on, so the checkpoint's VAE decodes an empty
64x64 latent into a PreviewImage (a temp file, nothing saved). A warm-up runs in idle time only: real work that
needs the node stops it (interrupt, or taken off the node's queue).

Keep-alive: an idle-lane prompt (a warm-up, a speculative job's) and an upscale's also carry a loader of the
checkpoint the node last held for real work that nothing links to. ComfyUI never runs it (it validates and executes
only what an output depends on; a dangling node is checked for its class alone, execution.py validate_prompt), but
its classic cache keys every node of the prompt (execution.py: `cache.set_prompt(dynamic_prompt, prompt.keys(),
...)`) and `clean_unused` drops only keys the prompt lacks (comfy_execution/caching.py `BasicCache._clean_cache`
keeps `cache_key_set.get_used_keys()`). CheckpointLoaderSimple's key is its class and ckpt_name alone (no
UNIQUE_ID, not NOT_IDEMPOTENT), so the loader output of the real work's prompt, the model objects, stays cached:
when that work comes back ComfyUI finds it and only moves the weights back to VRAM instead of reading the file.
Under `--cache-none` nothing is kept and the dangling loader costs nothing either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.comfy.protocol import ExecutionError, ExecutionInterrupted, ExecutionSuccess
from orchestrator.errors import ComfyError
from orchestrator.farm.registry import Node, Registry

log = logging.getLogger(__name__)

#: a warm-up that has not loaded its checkpoint by then is given up (the next stage just pays the load)
WARMUP_TIMEOUT_S = 120.0


def warmup_graph(checkpoint: str, keep_alive: str | None = None) -> dict[str, Any]:
    """The smallest prompt that makes a node load `checkpoint` (its VAE decodes a blank 64x64 latent)."""
    graph: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    return with_keep_alive(graph, keep_alive) if keep_alive else graph


def with_keep_alive(graph: Mapping[str, Any], checkpoint: str) -> dict[str, Any]:
    """A copy of `graph` with a loader of `checkpoint` that nothing links to (see the module's docstring)."""
    node_id = str(max((int(k) for k in graph if k.isdigit()), default=0) + 1)
    return {**graph, node_id: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}}}


@dataclass(slots=True, eq=False)
class _Warming:
    checkpoint: str
    task: asyncio.Task[None]


class Warmer:
    """The warm-ups under way, one per node at most; tells the registry which checkpoint a node holds after one."""

    def __init__(self, registry: Registry, on_end: Callable[[], None]) -> None:
        self.registry = registry
        self._on_end = on_end
        self._warming: dict[str, _Warming] = {}
        #: warm-ups that loaded their checkpoint
        self.done = 0
        #: set whenever a warm-up ends (for whoever waits on the checkpoints nodes hold)
        self.changed = asyncio.Event()
        #: (node, checkpoint) warm-ups that ended without loading it (refused, failed): not tried again by the same
        #: standing warm-up, or an idle node would be asked again each time it wakes
        self.gave_up: set[tuple[str, str]] = set()

    def busy(self, node_id: str) -> bool:
        """True while a warm-up runs on the node."""
        return node_id in self._warming

    def start(self, node: Node, checkpoint: str, keep_alive: str | None = None) -> None:
        """Load `checkpoint` on an idle node (keeping `keep_alive` in its cache)."""
        if node.id in self._warming:
            return
        task = asyncio.create_task(self._run(node, checkpoint, keep_alive), name=f"warmup-{node.id}")
        self._warming[node.id] = _Warming(checkpoint, task)
        task.add_done_callback(functools.partial(self._ended, node.id))

    def stop(self, node_id: str) -> None:
        """Real work needs the node: stop its warm-up (the prompt comes off the node)."""
        w = self._warming.get(node_id)
        if w is not None and not w.task.done():
            w.task.cancel()

    async def close(self) -> None:
        """Stop every warm-up."""
        tasks = [w.task for w in self._warming.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _ended(self, node_id: str, task: asyncio.Task[None]) -> None:  # a done callback
        w = self._warming.get(node_id)
        if w is not None and w.task is task:
            del self._warming[node_id]
        self.changed.set()
        self._on_end()

    async def _run(self, node: Node, checkpoint: str, keep_alive: str | None) -> None:
        prompt_id: str | None = None
        try:
            accepted = await node.client.submit(warmup_graph(checkpoint, keep_alive))
            prompt_id = accepted.prompt_id
            watch = node.client.watch(prompt_id)
            try:
                async with asyncio.timeout(WARMUP_TIMEOUT_S):
                    async for ev in watch:
                        if isinstance(ev, ExecutionSuccess):
                            self.registry.record_checkpoint(node.id, checkpoint, keep_alive=keep_alive)
                            self.done += 1
                            log.info("♨ node=%s holds %s (warmed up while people vote)", node.id, checkpoint)
                            return
                        if isinstance(ev, (ExecutionError, ExecutionInterrupted)):
                            self.gave_up.add((node.id, checkpoint))
                            return
            finally:
                watch.close()
        except asyncio.CancelledError:
            if prompt_id is not None:
                await asyncio.shield(self._remove(node, prompt_id))
            raise
        except (ComfyError, OSError, TimeoutError) as e:
            self.gave_up.add((node.id, checkpoint))
            log.info("node=%s: warm-up of %s given up (%s)", node.id, checkpoint, e)

    async def _remove(self, node: Node, prompt_id: str) -> None:
        try:
            q = await node.client.queue()
            if prompt_id in q.running:
                await node.client.interrupt(prompt_id)
            elif prompt_id in q.pending:
                await node.client.delete_queued([prompt_id])
        except (ComfyError, OSError):
            log.debug("node=%s could not stop warm-up prompt %s", node.id, prompt_id)
