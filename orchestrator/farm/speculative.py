"""
The idle-only lane: speculative jobs (what Continue would run, computed while people vote) and their accounting.

A speculative job is queued like any other but taken by a node only when nothing real that node can run is
waiting, and interrupted when real work needs its node (the backup-copy machinery's way: the run is abandoned and
its prompt removed from the node). At Continue the session engine adopts the jobs whose specs match the real
stage's: from then on they are that stage's jobs. GPU-seconds of speculative runs are counted here, as useful
(adopted) or wasted (interrupted, cancelled, or never adopted).
"""

from __future__ import annotations

from dataclasses import dataclass

#: a speculative batch's id starts with this, so that its rows are told apart after a restart (they are cancelled)
SPECULATIVE_BATCH_PREFIX = "spec-"


def is_speculative_batch(batch_id: str) -> bool:
    """True for the batch id of a speculative submission."""
    return batch_id.startswith(SPECULATIVE_BATCH_PREFIX)


@dataclass(frozen=True, slots=True)
class SpeculationStats:
    """Speculative work so far: GPU-seconds adopted (useful) and thrown away (wasted), and job counts."""

    #: GPU-seconds of speculative runs whose job was adopted by a real stage
    useful_gpu_s: float = 0.0
    #: GPU-seconds of speculative runs interrupted, cancelled, or finished and never adopted
    wasted_gpu_s: float = 0.0
    #: speculative jobs submitted, adopted at Continue, and cancelled (no longer matching, or left over)
    submitted: int = 0
    adopted: int = 0
    cancelled: int = 0
    #: speculative runs interrupted because real work needed their node
    preempted: int = 0
    #: checkpoint loads run in idle time ahead of the next stage
    warmups: int = 0

    @property
    def waste_ratio(self) -> float | None:
        """Wasted over useful GPU-seconds (None before anything was adopted)."""
        return self.wasted_gpu_s / self.useful_gpu_s if self.useful_gpu_s > 0 else None


#: how many dropped speculative job ids the ledger remembers (see SpeculationLedger._dropped)
DROPPED_KEPT = 4096


class SpeculationLedger:
    """Counts speculative GPU-seconds and jobs as the scheduler and the session engine report them."""

    def __init__(self) -> None:
        self.useful_gpu_s = 0.0
        self.wasted_gpu_s = 0.0
        self.submitted = 0
        self.adopted = 0
        self.cancelled = 0
        self.preempted = 0
        #: GPU-seconds spent so far on each unadopted speculative job (decided at adoption or at its end)
        self._pending: dict[str, float] = {}
        #: jobs dropped already: a run of theirs that still ends (its image was being stored) is wasted at once.
        #: The most recent DROPPED_KEPT only (oldest out first): such a run ends within seconds of its drop, and a
        #: bot that runs for weeks must not keep every id it ever dropped.
        self._dropped: dict[str, None] = {}

    def ran(self, job_id: str, seconds: float) -> None:
        """A speculative run of `job_id` used a GPU for `seconds` (its outcome is decided later)."""
        if job_id in self._dropped:
            self.wasted_gpu_s += max(0.0, seconds)
            return
        self._pending[job_id] = self._pending.get(job_id, 0.0) + max(0.0, seconds)

    def adopt(self, job_id: str) -> None:
        """The job became a real stage's: what it ran so far was useful."""
        self.adopted += 1
        self.useful_gpu_s += self._pending.pop(job_id, 0.0)

    def discard(self, job_id: str) -> None:
        """The job was cancelled or left over: what it ran was wasted."""
        self._dropped[job_id] = None
        if len(self._dropped) > DROPPED_KEPT:
            del self._dropped[next(iter(self._dropped))]
        self.wasted_gpu_s += self._pending.pop(job_id, 0.0)

    def snapshot(self, warmups: int = 0) -> SpeculationStats:
        """The counts now (`warmups`: checkpoint loads done ahead of a stage, counted by the warmer)."""
        return SpeculationStats(
            useful_gpu_s=round(self.useful_gpu_s, 3),
            wasted_gpu_s=round(self.wasted_gpu_s, 3),
            submitted=self.submitted,
            adopted=self.adopted,
            cancelled=self.cancelled,
            preempted=self.preempted,
            warmups=warmups,
        )
