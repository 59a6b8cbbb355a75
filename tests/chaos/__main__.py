"""
`make soak`: run many chaos schedules, print a table of faults x outcomes, write it into bench/results.md.

    python -m tests.chaos --runs 500            # seeds 1..500
    python -m tests.chaos --seed 7 -v           # replay one seed with the engine's log
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from tests.chaos.faults import KINDS, make_schedule
from tests.chaos.harness import Outcome, run_schedule
from tests.chaos.test_chaos import NODES

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results.md"
SECTION = "## Faults (make soak)"


async def _baseline(tmp: Path) -> float:
    """Fault-free time of a 14-image batch, the yardstick for 'worst batch time over fault-free time'."""
    from tests.chaos.faults import Schedule

    times = []
    for i in range(3):
        out = await run_schedule(Schedule(seed=0, counts=(14,), faults=()), tmp / f"base{i}")
        times.append(out.seconds)
    return sorted(times)[1]


async def soak(seeds: list[int], verbose: bool) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="vibes-soak-") as d:
        for seed in seeds:
            schedule = make_schedule(seed, NODES)
            out = await run_schedule(schedule, Path(d) / str(seed))
            outcomes.append(out)
            mark = "ok" if out.ok else "FAIL"
            for crash in out.crashes:
                print(f"seed={seed}: supervised task restarted: {crash}")
            if verbose or not out.ok:
                print(
                    f"{mark} {schedule.describe()} -> {out.delivered}/{out.jobs} delivered, {out.seconds:.2f}s",
                    flush=True,
                )
                for v in out.violations:
                    print(f"   ! {v}")
            elif seed % 25 == 0:
                print(f"... seed {seed}", flush=True)
    return outcomes


def table(outcomes: list[Outcome], baseline: float, wall: float) -> str:
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    injected: Counter[str] = Counter()
    for o in outcomes:
        for f in o.schedule.faults:
            injected[f.kind] += 1
        for kind in {f.kind for f in o.schedule.faults}:
            by_kind[kind].append(o)
    lines = [
        SECTION,
        "",
        f"`make soak` on {platform.machine()} / Python {platform.python_version()}: {len(outcomes)} seeded schedules "
        f"of one to four faults at random moments of one or two 8-20 image batches, real orchestrator against the "
        f"simulated farm at time scale x0.01, invariants checked after each (tests/chaos/harness.py). "
        f"Fault-free batch of 14: {baseline:.2f} s. Run took {wall:.0f} s.",
        "",
        "| fault | injected | schedules with it | jobs | delivered | failed with a reason (of them cancelled) | lost | "
        "worst batch time / fault-free | schedules breaking an invariant |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        runs = by_kind.get(kind, [])
        if not runs:
            continue
        worst = max(o.seconds for o in runs) / baseline
        lines.append(
            f"| {kind} | {injected[kind]} | {len(runs)} | {sum(o.jobs for o in runs)} | "
            f"{sum(o.delivered for o in runs)} | {sum(o.failed for o in runs)} ({sum(o.cancelled for o in runs)}) | "
            f"{sum(o.lost for o in runs)} | "
            f"{worst:.1f}x | {sum(not o.ok for o in runs)} |"
        )
    total_worst = max(o.seconds for o in outcomes) / baseline
    lines.append(
        f"| **all** | {sum(injected.values())} | {len(outcomes)} | {sum(o.jobs for o in outcomes)} | "
        f"{sum(o.delivered for o in outcomes)} | {sum(o.failed for o in outcomes)} "
        f"({sum(o.cancelled for o in outcomes)}) | "
        f"**{sum(o.lost for o in outcomes)}** | {total_worst:.1f}x | **{sum(not o.ok for o in outcomes)}** |"
    )
    lines += [
        "",
        f"Reconciler heals: {sum(o.heals for o in outcomes)}; supervised task restarts: "
        f"{sum(o.restarts for o in outcomes)}; backup copies started: {sum(o.backups for o in outcomes)}.",
    ]
    failing = [o.schedule.seed for o in outcomes if not o.ok]
    if failing:
        lines.append(f"Failing seeds (replay with `make soak SEED=N`): {', '.join(map(str, failing[:20]))}.")
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace the faults section of bench/results.md (the rest is `make bench`'s)."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head, _, rest = old.partition(SECTION)
    tail = ""
    if rest:
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
    RESULTS.write_text(head.rstrip() + "\n\n" + text + ("\n" + tail if tail else ""))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--runs", type=int, default=500, help="schedules to run (seeds 1..N)")
    p.add_argument("--first", type=int, default=1, help="the first seed of the runs")
    p.add_argument("--seed", type=int, help="replay one seed")
    p.add_argument("-v", "--verbose", action="store_true", help="print every schedule (and the log, with --seed)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write bench/results.md")
    args = p.parse_args()
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.runs))
    logging.basicConfig(
        level=logging.INFO if (args.verbose and args.seed is not None) else logging.CRITICAL,
        format="%(relativeCreated)7.0f %(name)s %(message)s",
    )
    t0 = time.monotonic()
    outcomes = asyncio.run(soak(seeds, args.verbose or args.seed is not None))
    if args.seed is not None:
        sys.exit(0 if outcomes[0].ok else 1)
    with tempfile.TemporaryDirectory(prefix="vibes-soak-base-") as d:
        baseline = asyncio.run(_baseline(Path(d)))
    text = table(outcomes, baseline, time.monotonic() - t0)
    print(text)
    if not args.no_write:
        write_section(text)
    sys.exit(0 if all(o.ok for o in outcomes) else 1)


if __name__ == "__main__":
    main()
