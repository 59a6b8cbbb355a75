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


# ---------------------------------------------------------------------------- the bot talks to the facade only

#: what bot/ may import from the orchestrator: the facade (and the instance's leadership), its shared input
#: checks, the models and errors it hands out, the event types it publishes, the settings, and the CLI entry that
#: `python -m bot` runs
BOT_MAY_IMPORT = (
    "orchestrator.service",
    # the process's role among instances sharing a PostgreSQL database: `vibes bot` stands by on it before it
    # connects to Discord at all, so it sits beside the facade rather than behind it
    "orchestrator.leadership",
    "orchestrator.checks",
    "orchestrator.models",
    "orchestrator.sessions.models",
    "orchestrator.llm.changes",
    "orchestrator.errors",
    "orchestrator.events",
    "orchestrator.config",
    "orchestrator.cli",
)
#: what it must never import (the storage, the farm and its old module paths), named so a failure reads clearly
BOT_MUST_NOT_IMPORT = (
    "orchestrator.db",
    "orchestrator.store",
    "orchestrator.farm",
    "orchestrator.scheduler",
    "orchestrator.registry",
    "orchestrator.router",
    "orchestrator.job_runner",
    "orchestrator.job_table",
    "orchestrator.job_state",
    "orchestrator.recovery",
    "orchestrator.sessions.engine",
    "orchestrator.sessions.context",
    "orchestrator.sessions.records",
)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, *, runtime_only: bool) -> set[str]:
    """Absolute module names a file imports (`from a import b` counts as a.b when a/b.py exists, else a)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()

    def visit(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                if not runtime_only:
                    visit(node.body, top)
                visit(node.orelse, top)
                continue
            if isinstance(node, ast.Import) and (top or not runtime_only):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (top or not runtime_only):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (
                        ROOT / Path(*sub.split(".")) / "__init__.py"
                    ).exists()
                    out.add(sub if is_module else node.module)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    # Imports inside functions run when called, not at import time: no circle at runtime.
                    nested_top = top and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    visit([child], nested_top)

    visit(tree.body, True)
    return out


def test_bot_imports_only_the_facade_models_errors_and_events():
    wrong = {}
    for p in (ROOT / "bot").rglob("*.py"):
        mods = {m for m in imported_modules(p, runtime_only=False) if m.startswith("orchestrator")}
        bad = sorted(m for m in mods if _within(m, BOT_MUST_NOT_IMPORT) or not _within(m, BOT_MAY_IMPORT))
        if bad:
            wrong[str(p.relative_to(ROOT))] = bad
    assert wrong == {}


def test_the_layering_check_sees_a_forbidden_import(tmp_path):
    # The rule above must be able to fail: a file importing the DB is caught.
    (tmp_path / "x.py").write_text("from orchestrator.db import Database\nimport orchestrator.farm.scheduler\n")
    mods = imported_modules(tmp_path / "x.py", runtime_only=False)
    assert {"orchestrator.db", "orchestrator.farm.scheduler"} <= mods
    assert all(_within(m, BOT_MUST_NOT_IMPORT) for m in mods)


def runtime_graph(package: str) -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return {
        name: {m for m in imported_modules(path, runtime_only=True) if m in files and m != name}
        for name, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph, as the modules along it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := dfs(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := dfs(n)):
            return found
    return None


def test_no_import_circle_in_the_bot_at_runtime():
    assert find_cycle(runtime_graph("bot")) is None


def test_the_circle_check_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: a module longer than this holds more than one job; split it by what its parts hold
MAX_MODULE_LINES = 600


def test_no_module_is_longer_than_the_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for folder in ("orchestrator", "bot", "tests", "bench")
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
