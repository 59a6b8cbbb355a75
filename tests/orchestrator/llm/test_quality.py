"""bench/feedback_quality on the shipped case set: enough cases, and the rules hold a quality floor."""

from __future__ import annotations

from bench.feedback_quality import DEFAULT_CASES, format_markdown, load_cases, run_quality


def test_case_set_has_at_least_60_cases():
    assert len(load_cases(DEFAULT_CASES)) >= 60


def test_rules_precision_and_recall_floor():
    report = run_quality(DEFAULT_CASES)
    [rules] = report.paths
    for f in rules.fields:
        assert f.precision >= 0.85, f
        assert f.recall >= 0.85, f
    md = format_markdown(report)
    assert "| rules | add |" in md and "--host" in md
