"""`vibes generate`: one batch on the configured farm."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from orchestrator.cli.common import TerminalProgress, add_config_arg, follow, load
from orchestrator.errors import InputError
from orchestrator.models import Family, LoraSpec, TaskKind
from orchestrator.service import GenerateRequest, Orchestrator


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate", help="render one batch on the farm", description="Render one batch on the farm.")
    p.add_argument("prompt")
    add_config_arg(p)
    p.add_argument("--family", choices=[f.value for f in Family], default=Family.SD15.value)
    p.add_argument("--task", choices=[t.value for t in TaskKind if t is not TaskKind.UPSCALE], default="draft")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--negative", default="")
    p.add_argument("--lora", action="append", default=[], metavar="NAME:WEIGHT")
    p.add_argument("--out", metavar="DIR", help="data directory for this run (images, thumbnails, database)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--sim", action="store_true", help="serve the config's simulated nodes in this process")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        loras = tuple(LoraSpec.parse(x) for x in args.lora)
    except ValueError as e:
        raise InputError(str(e)) from None
    req = GenerateRequest(
        prompt=args.prompt,
        family=Family(args.family),
        count=args.count,
        negative_prompt=args.negative,
        task=TaskKind(args.task),
        width=args.width,
        height=args.height,
        steps=args.steps,
        cfg=args.cfg,
        seed=args.seed,
        loras=loras,
    )
    return asyncio.run(_generate(args, req))


async def _generate(args: argparse.Namespace, req: GenerateRequest) -> int:
    config = load(args, out=args.out)
    orch = Orchestrator(config, sim=args.sim, ephemeral_ports=True)
    await orch.start()
    try:
        specs = orch.build_specs(req)
        sub = orch.bus.subscribe()
        t0 = time.monotonic()
        batch_id = await orch.submit(specs)
        progress = TerminalProgress(len(specs), "generate", sys.stderr)
        await follow(sub, batch_id, progress)
        sub.close()
        result = await orch.wait_batch(batch_id)
        wall = time.monotonic() - t0
    finally:
        await orch.stop()
    per_node: dict[str, int] = {}
    for im in result.images:
        per_node[im.node_id] = per_node.get(im.node_id, 0) + 1
    if args.json:
        out = {
            "images": [
                {
                    "id": im.id,
                    "node": im.node_id,
                    "path": im.path,
                    "thumbnail": im.thumbnail,
                    "seed": im.seed,
                    "seconds": im.seconds,
                    "checkpoint": im.checkpoint,
                }
                for im in result.images
            ],
            "failed": [{"id": j.id, "error": j.error or j.status.value} for j in result.failed],
            "wall_seconds": round(wall, 3),
            "per_node": per_node,
        }
        print(json.dumps(out, indent=2))
    else:
        for im in result.images:
            print(f"{im.index:>3}  {im.node_id:<14} seed {im.seed:<10} {im.seconds:6.2f}s  {im.path}")
        for j in result.failed:
            print(f"failed {j.id}: {j.error}")
        print(
            f"{len(result.images)}/{len(specs)} images in {wall:.1f}s  "
            + " ".join(f"{k}:{v}" for k, v in per_node.items())
        )
    return 0 if not result.failed else 1
