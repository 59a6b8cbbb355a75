"""Run the simulated farm of design.md section 10 in a child process (`vibes sim`), so only the orchestrator's
own CPU is measured in this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from orchestrator.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, *, time_scale: float, extra_nodes: list[dict] | None = None) -> Path:
    """A copy of the shipped simulated farm on free loopback ports."""
    doc = yaml.safe_load((ROOT / "config" / "gpus.yaml").read_text())
    for node in doc["nodes"]:
        node["port"] = free_port()
    doc["nodes"] += extra_nodes or []
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gpus.yaml").write_text(yaml.safe_dump(doc))
    (directory / "settings.yaml").write_text(yaml.safe_dump({"sim": {"time_scale": time_scale}}))
    return directory


async def _wait_ports(config: Config, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for node in config.nodes:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vibes sim exited with {proc.returncode}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", node.port)
                w.close()
                await w.wait_closed()
                break
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"simulated node {node.id} did not come up") from None
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def sim_farm(time_scale: float, data_dir: Path) -> AsyncIterator[Config]:
    """Serve the simulated farm in a child process; yields the config pointing at it (data in data_dir)."""
    tmp = Path(tempfile.mkdtemp(prefix="vibes-bench-"))
    try:
        cfg_dir = write_config(tmp / "config", time_scale=time_scale)
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "sim", "--config", str(cfg_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "VIBES_DATA": str(data_dir)},
        )
        try:
            config = load_config(cfg_dir, env={"VIBES_DATA": str(data_dir)})
            await _wait_ports(config, proc)
            yield config
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
