"""The four Draft Grid stage batches, run by our scheduler and by the seed's even split, with their lower bounds."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.farm import sim_farm
from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.protocol import Executed, ExecutionError, ExecutionSuccess
from orchestrator.config import Config, NodeConfig
from orchestrator.db import Database
from orchestrator.farm.router import even_split
from orchestrator.models import Family, GenerationParams, JobSpec, Mode, TaskKind
from orchestrator.service import Orchestrator
from orchestrator.store import ImageStore
from orchestrator.workflows import WorkflowEngine


@dataclass(frozen=True)
class StageSpec:
    name: str
    count: int
    family: Family
    size: int
    steps: int
    task: TaskKind
    img2img: bool = False
    denoise: float = 1.0
    upscale: bool = False


STAGES = (
    StageSpec("drafts", 20, Family.SD15, 512, 10, TaskKind.DRAFT),
    StageSpec("refined", 8, Family.SDXL, 1024, 25, TaskKind.STANDARD, img2img=True, denoise=0.6),
    StageSpec("polished", 3, Family.SDXL, 1024, 35, TaskKind.QUALITY, img2img=True, denoise=0.45),
    StageSpec("final", 1, Family.SDXL, 1024, 50, TaskKind.PREMIUM, img2img=True, denoise=0.35, upscale=True),
)


@dataclass
class StageRun:
    wall: float
    per_node: Counter[str]
    loads: int
    upscale_path: str | None = None
    paths: list[str] = field(default_factory=list)


def capable(nodes: tuple[NodeConfig, ...], st: StageSpec) -> list[NodeConfig]:
    return [n for n in nodes if n.can_run(st.family.value) and st.size <= n.max_resolution]


def true_seconds(node: NodeConfig, st: StageSpec, scale: float) -> float:
    assert node.sim is not None
    fam = st.family.speed_family
    per_step = node.sim.seconds_per_step[fam]
    return per_step * st.steps * (st.size**2 / st.family.native_size**2) * scale


def lower_bounds(
    nodes: tuple[NodeConfig, ...], st: StageSpec, loaded: dict[str, str | None], ckpt: str, scale: float
) -> tuple[float, float]:
    """(best whole-image assignment, continuous bound) at the nodes' true speeds, loads where needed."""
    cands = capable(nodes, st)
    free = {n.id: (0.0 if loaded.get(n.id) == ckpt else n.sim.checkpoint_load_seconds * scale) for n in cands}
    run = {n.id: true_seconds(n, st, scale) for n in cands}
    used: set[str] = set()
    # Identical images on nodes of different speeds: each to the node where it finishes first is optimal.
    for _ in range(st.count):
        best = min(cands, key=lambda n: free[n.id] + run[n.id])
        free[best.id] += run[best.id]
        used.add(best.id)
    whole = max(free[n] for n in used)
    # Continuous: the work shared at the combined throughput of the nodes, after the cheapest load.
    rate = sum(1.0 / run[n.id] for n in cands)
    min_load = min(0.0 if loaded.get(n.id) == ckpt else n.sim.checkpoint_load_seconds * scale for n in cands)
    cont = min_load + st.count / rate
    if st.upscale:
        prem = next(n for n in nodes if n.can_run("upscale"))
        up = prem.sim.upscale_seconds * scale
        whole += up
        cont += up
    return whole, cont


def _params(st: StageSpec, cfg: Config, seed: int, init: str | None) -> GenerationParams:
    return GenerationParams(
        prompt="a lighthouse at dusk, dramatic sky",
        family=st.family,
        checkpoint=cfg.settings.checkpoint_for(st.family),
        width=st.size,
        height=st.size,
        steps=st.steps,
        seed=seed,
        denoise=st.denoise,
        mode=Mode.IMG2IMG if st.img2img else Mode.TXT2IMG,
        init_image=init if st.img2img else None,
    )


def count_loads(sequence: dict[str, list[str]], loaded: dict[str, str | None]) -> int:
    loads = 0
    for node, ckpts in sequence.items():
        cur = loaded.get(node)
        for c in ckpts:
            if c != cur:
                loads += 1
                cur = c
        loaded[node] = cur
    return loads


async def run_ours(orch: Orchestrator, st: StageSpec, cfg: Config, init: str | None, loaded: dict) -> StageRun:
    specs = [JobSpec(params=_params(st, cfg, 1000 + i, init), task=st.task, index=i + 1) for i in range(st.count)]
    t0 = time.perf_counter()
    batch = await orch.submit(specs)
    result = await orch.wait_batch(batch)
    up_path = None
    if st.upscale and result.images:
        im = result.images[0]
        up = GenerationParams(
            prompt=im.prompt,
            family=st.family,
            mode=Mode.UPSCALE,
            init_image=im.path,
            upscale_model=cfg.settings.upscale_model,
            width=im.width,
            height=im.height,
        )
        r2 = await orch.wait_batch(await orch.submit([JobSpec(params=up, task=TaskKind.UPSCALE, index=1)]))
        up_path = r2.images[0].path if r2.images else None
    wall = time.perf_counter() - t0
    if result.failed:
        raise RuntimeError(f"stage {st.name}: {len(result.failed)} images failed: {result.failed[0].error}")
    db = Database(orch.settings.storage.db_path)  # the facade has no DB: read the jobs' timings directly
    await db.open()
    try:
        jobs = sorted(await db.batch_jobs(batch), key=lambda j: j.started_at or 0)
    finally:
        await db.close()
    seq: dict[str, list[str]] = {}
    for j in jobs:
        seq.setdefault(j.node_id or "?", []).append(j.params.checkpoint)
    return StageRun(
        wall,
        Counter(im.node_id for im in result.images),
        count_loads(seq, loaded),
        up_path,
        [im.path for im in result.images],
    )


async def run_even_split(
    clients: dict[str, ComfyClient],
    cfg: Config,
    st: StageSpec,
    init: str | None,
    store: ImageStore,
    engine: WorkflowEngine,
    loaded: dict,
) -> StageRun:
    """The seed: split the batch evenly over every capable node, queue each share on its node at once."""
    nodes = capable(cfg.nodes, st)
    split = even_split(st.count, [n.id for n in nodes])
    t0 = time.perf_counter()
    init_bytes = Path(init).read_bytes() if init else None

    async def one(node_id: str, seed: int) -> str:
        client = clients[node_id]
        name = await client.upload_image(init_bytes, f"seed_{seed}.png") if init_bytes else None
        graph = engine.build(_params(st, cfg, seed, init), input_image=name)
        accepted = await client.submit(graph)
        images = []
        async for ev in client.watch(accepted.prompt_id):
            if isinstance(ev, Executed):
                images.extend(ev.images)
            elif isinstance(ev, ExecutionError):
                raise RuntimeError(ev.exception_message)
            elif isinstance(ev, ExecutionSuccess):
                break
        data = await client.view(images[0])
        saved = await store.save("even", f"{node_id}_{seed}_{random.randrange(10**9)}", data)
        return str(saved.path)

    tasks = []
    seed = 1000
    for node_id, n in split.items():
        for _ in range(n):
            tasks.append(asyncio.create_task(one(node_id, seed)))
            seed += 1
    paths = await asyncio.gather(*tasks)
    up_path = None
    if st.upscale:
        prem = next(n for n in cfg.nodes if n.can_run("upscale"))
        up = GenerationParams(
            prompt="up",
            family=st.family,
            mode=Mode.UPSCALE,
            init_image=paths[0],
            upscale_model=cfg.settings.upscale_model,
            width=st.size,
            height=st.size,
        )
        client = clients[prem.id]
        name = await client.upload_image(Path(paths[0]).read_bytes(), "seed_up.png")
        accepted = await client.submit(engine.build(up, input_image=name))
        up_images = []
        async for ev in client.watch(accepted.prompt_id):
            if isinstance(ev, Executed):
                up_images.extend(ev.images)
            elif isinstance(ev, ExecutionError):
                raise RuntimeError(ev.exception_message)
            elif isinstance(ev, ExecutionSuccess):
                break
        # The seed stores the upscaled image like any other, so it pays the same download and thumbnail as ours.
        up_saved = await store.save("even", f"up_{random.randrange(10**9)}", await client.view(up_images[0]))
        up_path = str(up_saved.path)
    wall = time.perf_counter() - t0
    ckpt = cfg.settings.checkpoint_for(st.family)
    seq = {nid: [ckpt] for nid, n in split.items() if n}
    return StageRun(wall, Counter({k: v for k, v in split.items() if v}), count_loads(seq, loaded), up_path, paths)


async def seed_funnel(scale: float, work: Path) -> list[StageRun]:
    """The four stages by the seed's even split, one after the other, on a fresh simulated farm."""
    runs: list[StageRun] = []
    async with sim_farm(scale, work / "sim") as cfg:
        store = ImageStore(work / "images")
        engine = WorkflowEngine.load()
        clients = {n.id: ComfyClient(n.base_url, name=n.id) for n in cfg.nodes}
        for c in clients.values():
            await c.start()
        loaded: dict[str, str | None] = {}
        try:
            init = None
            for st in STAGES:
                run = await run_even_split(clients, cfg, st, init, store, engine, loaded)
                runs.append(run)
                init = run.paths[0]
        finally:
            for c in clients.values():
                await c.close()
    return runs
