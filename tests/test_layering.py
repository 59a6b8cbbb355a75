"""Architecture rules: the core never imports discord; nothing in the product names a private-range address."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_orchestrator_never_imports_discord_or_bot():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "orchestrator").rglob("*.py")
        # `vibes bot` is the one CLI entry that starts the Discord front end (a lazy import inside run()).
        if imports(p) & {"discord", "bot"} and p != ROOT / "orchestrator" / "cli" / "bot_cmd.py"
    ]
    assert offenders == []


def test_no_private_range_address_in_code_tests_or_bench():
    pattern = re.compile(r"\b(192\.168|10\.\d+\.\d+\.\d+|172\.(1[6-9]|2\d|3[01]))\.")
    hits = []
    for folder in ("orchestrator", "bot", "tests", "bench"):
        for p in (ROOT / folder).rglob("*.py"):
            if pattern.search(p.read_text(encoding="utf-8")):
                hits.append(str(p.relative_to(ROOT)))
    assert hits == []


def test_shipped_farm_is_loopback_only():
    text = (ROOT / "config" / "gpus.yaml").read_text()
    hosts = re.findall(r"host:\s*(\S+)", text)
    assert hosts and set(hosts) == {"127.0.0.1"}
