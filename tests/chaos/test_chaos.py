"""The chaos suite: seeded random fault schedules against the real orchestrator, invariants checked after each.

`make test` runs the seeds below; `make soak` runs hundreds more (python -m tests.chaos) and prints a table of
faults x outcomes; a failing seed is printed, and `make soak SEED=N` replays it.
"""

from __future__ import annotations

import pytest

from tests.chaos.faults import KINDS, make_schedule
from tests.chaos.harness import run_schedule

NODES = ("gpu-premium", "gpu-quality", "gpu-standard", "gpu-draft")
SEEDS = range(1, 26)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_fault_schedule_keeps_every_invariant(seed, tmp_path):
    schedule = make_schedule(seed, NODES)
    outcome = await run_schedule(schedule, tmp_path)
    assert outcome.ok, f"{schedule.describe()}\n" + "\n".join(outcome.violations) + f"\nreplay: make soak SEED={seed}"
    assert outcome.lost == 0
    assert outcome.delivered + outcome.failed == outcome.jobs == sum(schedule.counts)


def test_the_seeds_cover_every_fault_kind():
    seen = {f.kind for seed in SEEDS for f in make_schedule(seed, NODES).faults}
    assert seen == set(KINDS)
