"""`vibes demo --json`: the whole 20 -> 8 -> 3 -> 1 funnel on the simulated farm, with lineage and sheets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.orchestrator.farm import ROOT

pytestmark = pytest.mark.timeout(120)


def test_demo_json_lists_four_stages_with_lineage_and_contact_sheets(tmp_path, capsys, monkeypatch):
    # A shared database configured (even an unreachable one) is not the demo's: --out keeps its own SQLite file.
    monkeypatch.setenv("VIBES_DATABASE_URL", "postgresql://vibes:secret@127.0.0.1:9/vibes")
    out = tmp_path / "demo"
    rc = main(["demo", "--json", "--out", str(out), "--time-scale", "0.01", "--config", str(ROOT / "config")])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert (out / "vibes.db").is_file()
    assert set(result) == {"session", "wall_seconds", "stages", "final", "speculation"}
    assert set(result["speculation"]) >= {"useful_gpu_s", "wasted_gpu_s", "submitted", "adopted"}
    assert all(s["seconds"] >= 0 for s in result["stages"])
    assert [(s["name"], len(s["images"])) for s in result["stages"]] == [
        ("drafts", 20),
        ("refined", 8),
        ("polished", 3),
        ("final", 1),
    ]
    for earlier, later in zip(result["stages"], result["stages"][1:], strict=False):
        ids = {im["id"] for im in earlier["images"]}
        assert all(im["parent_id"] in ids for im in later["images"]), "every image's parent is in the stage before"
    assert all(set(im) == {"id", "node", "path", "parent_id"} for s in result["stages"] for im in s["images"])
    assert result["final"] == result["stages"][-1]["images"][0]["path"] and Path(result["final"]).exists()
    sheets = sorted((out / "images" / result["session"]).glob("sheet-*.png"))
    assert [p.name for p in sheets] == [
        "sheet-1-drafts.png",
        "sheet-2-refined.png",
        "sheet-3-polished.png",
        "sheet-4-final.png",
    ]


def test_demo_interactive_keeps_typed_numbers_takes_feedback_and_survives_the_end_of_input(
    tmp_path, capsys, monkeypatch
):
    # Typed: keep drafts 2 and 5; at the refined stage, feedback (accepted), then keep 1; then input ends.
    monkeypatch.setattr("sys.stdin", io.StringIO("2 5\nwarmer light, no people\ny\n1\n"))
    out = tmp_path / "demo"
    args = ["demo", "--interactive", "--json", "--out", str(out), "--time-scale", "0.01"]
    rc = main([*args, "--config", str(ROOT / "config")])
    captured = capsys.readouterr()
    assert rc == 0
    result = json.loads(captured.out)
    drafts, refined, polished, final = result["stages"]
    kept = {drafts["images"][1]["id"], drafts["images"][4]["id"]}
    assert {im["parent_id"] for im in refined["images"]} == kept, "the refined images grow from #2 and #5"
    assert {im["parent_id"] for im in polished["images"]} == {refined["images"][0]["id"]}
    assert "suggested (rules)" in captured.err and "+ warm golden light" in captured.err
    assert "input ended" in captured.err
    assert Path(result["final"]).exists() and final["images"][0]["path"] == result["final"]
