"""
Backup copies of stragglers (the backup-task rule of large batch systems), as pure decisions.

An idle node copies a job running (or waiting) on another node when the job is well past its estimate (its node
may be wedged while still answering health checks), or when the idle node would finish a copy clearly sooner
than the job's own node is expected to (the tail of a small batch on a slow card). Same graph and seed; the
first result wins and the other run is interrupted. The stall timeout still decides when a node is wedged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.models import Job

#: a copy must be expected to finish in at most this share of the time the original still needs
GAIN = 1.0


@dataclass(frozen=True, slots=True)
class Straggler:
    """A run on another node that an idle node could copy."""

    job: Job
    node_id: str
    #: seconds until its own node is expected to deliver it (Run.outlook of it and the runs ahead of it), how
    #: that moves per second while nothing is heard (positive: an overdue run ahead of it, or itself, growing),
    #: and for how long that rate holds
    remaining: float
    #: seconds since launch, and how long it was expected to take from launch (its node's queue included)
    elapsed: float
    expected: float
    #: seconds the idle node would need for a copy (checkpoint load included)
    copy_seconds: float
    remaining_rate: float = 0.0
    steady_for: float = math.inf


@dataclass(frozen=True, slots=True)
class BackupChoice:
    """What an idle node should do: copy `job` now, and/or look again in `recheck_in` seconds."""

    job: Job | None
    recheck_in: float | None
    overdue: bool = False


def choose_backup(candidates: Sequence[Straggler], overdue_factor: float) -> BackupChoice:
    """The straggler the idle node should copy now, if any, and when to look again otherwise."""
    best: Straggler | None = None
    best_gain = 0.0
    best_overdue = False
    recheck: float | None = None
    for c in candidates:
        limit = overdue_factor * max(c.expected, 1e-6)
        overdue = c.elapsed >= limit
        sooner = c.copy_seconds < GAIN * c.remaining
        if not (overdue or sooner):
            # Look again when it turns overdue, when its node's backlog changes pace, or when that backlog, growing,
            # makes a copy here sooner.
            wait = min(limit - c.elapsed, c.steady_for)
            if c.remaining_rate > 0:
                wait = min(wait, (c.copy_seconds - GAIN * c.remaining) / (GAIN * c.remaining_rate))
            recheck = wait if recheck is None else min(recheck, wait)
            continue
        # An overdue job may never finish where it is: copy it first, the longest-overdue one first.
        gain = (c.elapsed / limit) * 1e6 if overdue else c.remaining - c.copy_seconds
        if best is None or (overdue, gain) > (best_overdue, best_gain):
            best, best_gain, best_overdue = c, gain, overdue
    return BackupChoice(best.job if best else None, recheck, best_overdue)
