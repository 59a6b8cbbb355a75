"""`vibes demo --json`: the whole 20 -> 8 -> 3 -> 1 funnel on the simulated farm, with lineage and sheets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.orchestrator.farm import ROOT

pytestmark = pytest.mark.timeout(120)


def test_demo_json_lists_four_stages_with_lineage_and_contact_sheets(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--json", "--out", str(out), "--time-scale", "0.01", "--config", str(ROOT / "config")])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert set(result) == {"session", "wall_seconds", "stages", "final"}
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
