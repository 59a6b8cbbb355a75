"""Small batches at real speed (time scale 1), with backup copies of stragglers off and on.

A batch of 8 drafts on a fresh farm gives its 5th image to the slow draft card, which pays a checkpoint load for
it; the 3-image polished stage leaves one card with the tail. Backup copies let an idle card finish such a
straggler sooner (first result wins). Each run starts on a fresh farm with nothing loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.farm import sim_farm
from bench.stages import StageSpec, _params, lower_bounds
from orchestrator.comfy.sim import render as sim_render
from orchestrator.config import StorageSettings
from orchestrator.models import Family, JobSpec, TaskKind
from orchestrator.service import Orchestrator

SMALL = (
    StageSpec("8 drafts", 8, Family.SD15, 512, 10, TaskKind.DRAFT),
    StageSpec("polished (3)", 3, Family.SDXL, 1024, 35, TaskKind.QUALITY, img2img=True, denoise=0.45),
)


@dataclass(frozen=True)
class SmallRun:
    wall: float
    per_node: dict[str, int]
    backups: int
    won: int


async def _one(st: StageSpec, scale: float, work: Path, backups: bool) -> tuple[SmallRun, float]:
    async with sim_farm(scale, work / "sim") as cfg:
        cfg = cfg.with_settings(
            storage=StorageSettings(data_dir=work / "data"),
            scheduler=replace(cfg.settings.scheduler, backups=backups),
        )
        ckpt = cfg.settings.checkpoint_for(st.family)
        bound, _ = lower_bounds(cfg.nodes, st, {}, ckpt, scale)
        async with Orchestrator(cfg) as orch:
            init = None
            if st.img2img:
                png = sim_render.encode_png(sim_render.render_txt2img("a lighthouse", 7, st.size, st.size))
                init_path = cfg.settings.storage.data_dir / "init.png"
                init_path.write_bytes(png)
                init = str(init_path)
            specs = [
                JobSpec(params=_params(st, cfg, 1000 + i, init), task=st.task, index=i + 1) for i in range(st.count)
            ]
            t0 = time.perf_counter()
            result = await orch.wait_batch(await orch.submit(specs))
            wall = time.perf_counter() - t0
            if result.failed:
                raise RuntimeError(f"{st.name}: {len(result.failed)} failed: {result.failed[0].error}")
            per_node: dict[str, int] = {}
            for im in result.images:
                per_node[im.node_id] = per_node.get(im.node_id, 0) + 1
            health = orch.farm_health()
            return SmallRun(wall, per_node, health.backups_started, health.backups_won), bound


def _nodes(per_node: dict[str, int]) -> str:
    short = {"gpu-premium": "P", "gpu-quality": "Q", "gpu-standard": "S", "gpu-draft": "D"}
    return " ".join(f"{short.get(k, k)}{v}" for k, v in sorted(per_node.items()))


async def small_batches(work: Path, scale: float = 1.0) -> list[str]:
    """The table rows: each small batch with backups off and on, against its lower bound."""
    rows = [
        "| batch | images | backups off (s) | backups on (s) | lower bound (s) | off / bound | on / bound "
        "| per node off / on | copies started / won |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, st in enumerate(SMALL):
        off, bound = await _one(st, scale, work / f"off{i}", backups=False)
        on, _ = await _one(st, scale, work / f"on{i}", backups=True)
        rows.append(
            f"| {st.name} | {st.count} | {off.wall:.2f} | {on.wall:.2f} | {bound:.2f} | {off.wall / bound:.2f}x "
            f"| **{on.wall / bound:.2f}x** | {_nodes(off.per_node)} / {_nodes(on.per_node)} | {on.backups} / {on.won} |"
        )
    return rows
