"""Speculative GPU-seconds: useful once adopted, wasted when dropped (also for a run that ends after its drop)."""

from __future__ import annotations

from orchestrator.farm.speculative import DROPPED_KEPT, SpeculationLedger, is_speculative_batch


def test_adopted_work_is_useful_and_dropped_work_wasted():
    ledger = SpeculationLedger()
    ledger.ran("a", 2.0)
    ledger.ran("b", 3.0)
    ledger.adopt("a")
    ledger.discard("b")
    ledger.ran("b", 1.5)  # its image was being stored when it was dropped
    stats = ledger.snapshot()
    assert (stats.useful_gpu_s, stats.wasted_gpu_s, stats.adopted) == (2.0, 4.5, 1)
    assert stats.waste_ratio == 2.25
    assert SpeculationLedger().snapshot().waste_ratio is None


def test_speculative_batches_are_told_apart_by_their_id():
    assert is_speculative_batch("spec-abc-123") and not is_speculative_batch("4f2a")


def test_the_ledger_remembers_only_the_most_recent_drops():
    ledger = SpeculationLedger()
    for i in range(DROPPED_KEPT + 10):
        ledger.discard(f"job-{i}")
    ledger.ran(f"job-{DROPPED_KEPT + 9}", 1.0)  # a recent drop: its late run is wasted at once
    assert ledger.snapshot().wasted_gpu_s == 1.0
    ledger.ran("job-0", 1.0)  # long forgotten: counted as pending, like any run not yet decided
    assert ledger.snapshot().wasted_gpu_s == 1.0
    assert len(ledger._dropped) == DROPPED_KEPT
