"""`vibes demo`: a whole Draft Grid funnel on the simulated farm, picking by a fixed rule or by asking."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.cli.common import TerminalProgress, add_config_arg, load
from orchestrator.errors import ImGenError
from orchestrator.events import StageDone, Subscription
from orchestrator.service import Orchestrator
from orchestrator.sessions.models import Flow, SessionRequest, SessionState, StageView

PROMPT = "a lighthouse at dusk on a rocky coast, {warm,cold} light, dramatic clouds"
NEGATIVE = "text, watermark, blurry"
#: the demo's two pretend voters: the first keeps every picked image, the second backs the best one
VOTERS = ("demo-a", "demo-b")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="run a whole Draft Grid funnel on the simulated farm",
        description="Run a Draft Grid funnel (20 -> 8 -> 3 -> 1) on the built-in simulated farm.",
    )
    add_config_arg(p)
    p.add_argument("--interactive", action="store_true", help="ask which images to keep; accept free-text feedback")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="DIR", help="output and data directory (default ./out/demo-<timestamp>)")
    p.add_argument("--time-scale", type=float, default=0.25, metavar="X", help="simulated seconds x X (default 0.25)")
    p.add_argument("--prompt", default=PROMPT, help="the prompt (flags such as --ar 16:9 work)")
    p.add_argument("--upscale", action="store_true", help="add the 4x upscale of the final image")
    p.add_argument(
        "--vote-pause",
        type=float,
        default=0.0,
        metavar="S",
        help="simulated seconds people vote before Continue (voting time; default 0)",
    )
    p.add_argument("--no-speculation", action="store_true", help="no warm-ups or speculative stages while voting")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.time_scale <= 0:
        print("vibes: --time-scale must be > 0", file=sys.stderr)
        return 2
    if args.vote_pause < 0:
        print("vibes: --vote-pause must be >= 0", file=sys.stderr)
        return 2
    out = Path(args.out or Path("out") / time.strftime("demo-%Y%m%d-%H%M%S"))
    return asyncio.run(_demo(args, out))


async def _demo(args: argparse.Namespace, out: Path) -> int:
    config = load(args, out=str(out))
    config = config.with_settings(funnel=replace(config.settings.funnel, final_upscale=bool(args.upscale)))
    if args.no_speculation:
        config = config.with_settings(speculation=replace(config.settings.speculation, enabled=False, warmup=False))
    orch = Orchestrator(config, sim=True, time_scale=args.time_scale, ephemeral_ports=True)
    await orch.start()
    sub = orch.bus.subscribe(maxsize=100_000)
    try:
        t0 = time.monotonic()
        result = await _funnel(orch, sub, args)
        result["wall_seconds"] = round(time.monotonic() - t0, 3)
        result["speculation"] = dataclasses.asdict(orch.speculation_stats())
    finally:
        sub.close()
        await orch.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"final image: {result['final'] or 'none'}  ({result['wall_seconds']:.1f}s, data in {out})")
        spec = result["speculation"]
        if spec["submitted"] or spec["warmups"]:
            print(
                f"voting time: {spec['warmups']} warm-ups, {spec['adopted']}/{spec['submitted']} speculative images "
                f"adopted, GPU-seconds {spec['useful_gpu_s']:.1f} useful / {spec['wasted_gpu_s']:.1f} wasted"
            )
    return 0 if result["final"] else 1


async def _funnel(svc: Orchestrator, sub: Subscription, args: argparse.Namespace) -> dict[str, Any]:
    session = await svc.create_session(SessionRequest(Flow.DRAFT_GRID, VOTERS[0], args.prompt, negative=NEGATIVE))
    stages: list[dict[str, Any]] = []
    counts = [r.count for r in svc.settings.funnel.stages]
    while True:
        view = await svc.current_stage(session.id)
        started = time.monotonic()
        await _follow(sub, view)
        view = await svc.stage(view.id)
        waited = time.monotonic() - started
        sheet = await _sheet(svc, session.id, view)
        stages.append(
            {
                "name": view.name,
                "images": [
                    {
                        "id": im.image.id,
                        "node": im.image.node_id,
                        "path": im.image.path,
                        "parent_id": im.image.parent_id,
                    }
                    for im in view.images
                ],
            }
        )
        stages[-1]["seconds"] = round(waited, 3)
        if not args.json:
            print(f"{view.name:<9} {view.delivered}/{view.total} images in {waited:.1f}s  sheet: {sheet}")
        session = await svc.session(session.id)
        if session.state is SessionState.FINISHED or not view.images:
            break
        if session.stage_id != view.id:
            continue  # the service went on by itself (the final upscale)
        next_count = counts[view.index + 1] if view.index + 1 < len(counts) else 1
        if args.interactive:
            # Input that ends (a closed pipe, Ctrl-D) hands the rest of the funnel to the automatic rule.
            args.interactive = await _ask(svc, session.id, view)
        if not args.interactive:
            await _auto_pick(svc, session.id, view, next_count)
        if args.vote_pause:
            # People voting: the farm prepares the next stage meanwhile (unless --no-speculation).
            await asyncio.sleep(args.vote_pause * args.time_scale)
        await svc.advance(session.id, VOTERS[0])
    final = None
    if session.final_image_id:
        info = await svc.image_info(session.final_image_id)
        final = info.path
    return {"session": session.id, "wall_seconds": 0.0, "stages": stages, "final": final}


async def _follow(sub: Subscription, view: StageView) -> None:
    """Feed the stage's job events to a progress line until its StageDone."""
    progress = TerminalProgress(view.total, view.name, sys.stderr)
    async for ev in sub:
        if getattr(ev, "stage_id", None) != view.id:
            continue
        if isinstance(ev, StageDone):
            break
        progress.feed(ev)
    progress.render(final=True)


async def _sheet(orch: Orchestrator, session_id: str, view: StageView) -> str | None:
    """A numbered contact sheet of the stage (thumbnails, labelled with number and node)."""
    if not view.images:
        return None
    paths = [Path(im.image.thumbnail or im.image.path) for im in view.images]
    labels = [f"#{im.number} {im.image.node_id}" for im in view.images]
    return str(await orch.contact_sheet(session_id, f"sheet-{view.index + 1}-{view.name}", paths, labels))


async def _auto_pick(svc: Orchestrator, session_id: str, view: StageView, next_count: int) -> None:
    """The fixed rule: keep the first half as many images as the next stage has, the best one twice."""
    chosen = view.images[: max(1, math.ceil(next_count / 2))]
    keep = [im.image.id for im in chosen]
    for image_id in keep:
        await svc.vote(session_id, image_id, VOTERS[0], 1)
    await svc.vote(session_id, keep[0], VOTERS[1], 1)
    print(
        f"          kept {', '.join(f'#{im.number}' for im in chosen)} (#{chosen[0].number} with two votes)",
        file=sys.stderr,
    )


async def _input(prompt: str) -> str | None:
    """One line from the terminal, or None once input has ended (the question goes to stderr: stdout is the result)."""
    print(prompt, end="", file=sys.stderr, flush=True)
    try:
        return (await asyncio.to_thread(input)).strip()
    except EOFError:
        print("\n  (input ended: the automatic rule keeps images from here on)", file=sys.stderr)
        return None


async def _ask(svc: Orchestrator, session_id: str, view: StageView) -> bool:
    """Ask which numbers to keep (anything that is not numbers is feedback); False once input has ended."""
    numbers = {im.number: im.image.id for im in view.images}
    while True:
        line = await _input(f"{view.name}: numbers to keep (e.g. 1 4 7), or feedback: ")
        if line is None:
            return False
        picked = line.replace(",", " ").split()
        if picked and all(w.isdigit() for w in picked):
            chosen = [int(w) for w in picked if int(w) in numbers]
            if not chosen:
                print(f"  choose among {min(numbers)}-{max(numbers)}", file=sys.stderr)
                continue
            for n in chosen:
                await svc.vote(session_id, numbers[n], VOTERS[0], 1)
            return True
        if not line:
            continue
        try:
            result = await svc.refine(session_id, VOTERS[0], line)
        except ImGenError as e:
            print(f"  {e.user_message}", file=sys.stderr)
            continue
        print(
            f"  suggested ({result.source.value}): {result.prompt}\n  {result.diff.render()}\n  {result.rationale}",
            file=sys.stderr,
        )
        answer = await _input("  use it for the next stage? [Y/n] ")
        if answer is None:
            await svc.discard_suggestion(session_id, VOTERS[0])
            return False
        if answer.lower() in ("", "y", "yes"):
            await svc.apply_suggestion(session_id, VOTERS[0])
        else:
            await svc.discard_suggestion(session_id, VOTERS[0])
