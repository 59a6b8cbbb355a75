"""The takeover section of bench/results.md (the other sections belong to `make bench` and `make soak`)."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.failover.scenarios import Outcome

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results.md"
SECTION = "## Takeover (make failover)"


def takeover_section(outcomes: Sequence[Outcome]) -> str:
    kills = [o for o in outcomes if o.moment != "split brain"]
    times = [o.takeover_s for o in kills]
    lines = [
        SECTION,
        "",
        f"`make failover` on {platform.machine()} / Python {platform.python_version()}: embedded PostgreSQL, "
        "`vibes sim` (time scale x0.25), the fake Discord and two `vibes bot` processes (grace 2 s, keepalive 0.5 s) "
        "sharing the database and the image directory. A Draft Grid, two votes, Continue; the active instance is "
        "SIGKILLed during the refined stage. Takeover = the kill -> the first interaction the standby answers.",
        "",
        "| kill | takeover | refined images posted (once each) | properties |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        what = "all held" if not o.problems else "; ".join(o.problems)
        lines.append(f"| {o.moment} | {o.takeover_s:.2f} s | {o.images_posted} | {what} |")
    if times:
        lines += [
            "",
            f"Takeover over the {len(times)} kill moments: **median {statistics.median(times):.2f} s, "
            f"worst {max(times):.2f} s** (most of it is the grace period and the Discord login; the shipped "
            "`leadership.grace_s` is 3.5 s, which adds 1.5 s). The split-brain row "
            "cuts the active instance's lock connection on the server instead (its process lives on): it fences "
            "itself before the standby acts, and its time is the cut -> the standby answering.",
        ]
    return "\n".join(lines) + "\n"


def write_takeover_section(outcomes: Sequence[Outcome], path: Path = RESULTS) -> Path:
    """Replace (or add) the takeover section, keeping every other section as it is."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    head, found, rest = old.partition(SECTION)
    tail = ""
    if found:
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
    path.write_text(head.rstrip() + "\n\n" + takeover_section(outcomes) + ("\n" + tail if tail else ""))
    return path
