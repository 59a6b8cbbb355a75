"""`make failover`: the takeover at five moments of a stage and the split-brain cut, printed and timed.

Starts an embedded PostgreSQL server, then for each scenario a fresh database, `vibes sim`, the fake Discord and
two `vibes bot` processes; prints what happened and writes the takeover section of bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
from pathlib import Path

from tests.embedded_pg import EmbeddedPostgres
from tests.failover.results import write_takeover_section
from tests.failover.scenarios import MOMENTS, Outcome, split_brain, takeover


async def _run(root: Path, server: EmbeddedPostgres, verbose: bool) -> list[Outcome]:
    echo = print if verbose else None
    outcomes = []
    for i, moment in enumerate(MOMENTS):
        print(f"takeover, kill {moment}: ", end="", flush=True)
        try:
            out = await takeover(root / f"t{i}", await server.create_database(), moment, echo=echo)
        except (AssertionError, TimeoutError) as e:
            out = Outcome(moment, problems=[f"the scenario did not finish: {type(e).__name__}: {e}"])
        outcomes.append(out)
        _report(out)
    print("split brain (lock connection cut, process alive): ", end="", flush=True)
    try:
        out = await split_brain(root / "split", await server.create_database(), echo=echo)
    except (AssertionError, TimeoutError) as e:
        out = Outcome("split brain", problems=[f"the scenario did not finish: {type(e).__name__}: {e}"])
    outcomes.append(out)
    _report(out)
    return outcomes


def _report(out: Outcome) -> None:
    verdict = "OK" if not out.problems else "FAILED"
    print(f"{verdict}: answering {out.takeover_s:.2f} s after, {out.images_posted} refined images posted once")
    for note in out.notes:
        print(f"    note: {note}")
    for p in out.problems:
        print(f"    PROBLEM: {p}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.failover", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="echo every process's log")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/results.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vibes-failover-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        server.start()
        try:
            outcomes = asyncio.run(_run(Path(tmp), server, args.verbose))
        finally:
            server.stop()
    takeovers = [o for o in outcomes if o.moment in MOMENTS]
    times = [o.takeover_s for o in takeovers if not math.isnan(o.takeover_s)]
    if times:
        print(
            f"takeover (kill -> standby answering) over {len(times)} moments: "
            f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s"
        )
    bad = [o for o in outcomes if o.problems]
    if not args.no_write:
        path = write_takeover_section(outcomes)
        print(f"wrote the takeover section of {path}")
    print("all properties held" if not bad else f"{len(bad)} scenario(s) FAILED")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
