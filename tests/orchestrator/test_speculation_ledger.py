"""Speculative GPU-seconds: useful once adopted, wasted when dropped (also for a run that ends after its drop)."""

from __future__ import annotations

from orchestrator.farm.speculative import SpeculationLedger, is_speculative_batch


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
