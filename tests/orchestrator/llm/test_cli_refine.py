"""`vibes refine`: rules without Ollama, ollama against the fake, the --json shape, human output, bad input."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from orchestrator.cli.refine import refine
from orchestrator.errors import InputError
from tests.fakes.fake_ollama import FakeOllama

ROOT = Path(__file__).resolve().parents[3]


def config_dir(tmp_path: Path, host: str) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "settings.yaml").write_text(f"llm:\n  host: {host}\n  timeout_s: 5\n", encoding="utf-8")
    return d


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(*argv: str):
    return build_parser().parse_args(["refine", *argv])


async def test_json_rules_without_ollama(tmp_path):
    cfg = config_dir(tmp_path, f"127.0.0.1:{closed_port()}")
    out = io.StringIO()
    a = args(
        "a cat on a sofa, blurry", "--feedback", "make it a dog, no blur, warmer light", "--json", "--config", str(cfg)
    )
    assert await refine(a, out) == 0
    data = json.loads(out.getvalue())
    assert {"prompt", "negative_prompt", "rationale", "changes", "source"} <= data.keys()
    assert data["source"] == "rules"
    assert data["prompt"] == "a dog on a sofa, warm golden light, warm color palette"
    assert data["negative_prompt"] == "blurry"
    assert data["changes"]["modify"] == {"a cat": "a dog"}
    assert "not reachable" in data["fallback_reason"]


async def test_json_ollama_against_the_fake(tmp_path):
    async with FakeOllama() as fake:
        changes = {"keep": [], "remove": ["blurry"], "add": ["warm light"], "modify": {"a cat": "a dog"}}
        fake.script("hermes3:8b", {**changes, "emphasis_up": [], "emphasis_down": []})
        fake.script(
            "phi4:14b", {"prompt": "a dog on a sofa, warm light", "negative_prompt": "blurry", "rationale": "ok"}
        )
        cfg = config_dir(tmp_path, fake.url)
        out = io.StringIO()
        a = args(
            "a cat on a sofa, blurry",
            "--feedback",
            "make it a dog, no blur, warmer light",
            "--json",
            "--config",
            str(cfg),
        )
        await refine(a, out)
    data = json.loads(out.getvalue())
    assert data["source"] == "ollama" and data["prompt"] == "a dog on a sofa, warm light"


async def test_human_output_shows_diff_prompt_and_source(tmp_path):
    cfg = config_dir(tmp_path, f"127.0.0.1:{closed_port()}")
    out = io.StringIO()
    await refine(args("a forest, fog", "--feedback", "less fog", "--family", "flux", "--config", str(cfg)), out)
    text = out.getvalue()
    assert "diff:" in text and "+ subtle fog" in text
    assert "prompt:    A forest, with subtle fog." in text
    assert "source:    rules (fallback: Ollama not reachable" in text


async def test_missing_image_is_an_input_error(tmp_path):
    cfg = config_dir(tmp_path, f"127.0.0.1:{closed_port()}")
    with pytest.raises(InputError):
        await refine(args("x", "--feedback", "y", "--selected", str(tmp_path / "nope.png"), "--config", str(cfg)))


def test_console_entry_point_prints_json(tmp_path):
    """The real command line, in a subprocess, with Ollama disabled in the settings."""
    d = tmp_path / "c"
    d.mkdir()
    (d / "settings.yaml").write_text("llm:\n  enabled: false\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "orchestrator.cli", "refine", "a cat", "--feedback", "no hat", "--json"]
    proc = subprocess.run([*cmd, "--config", str(d)], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["source"] == "rules" and data["fallback_reason"] is None and data["negative_prompt"] == "hat"
