"""Orchestrator overhead: CPU per image, event-loop lag while big images stream in, memory per queued job."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.config import Config, NodeConfig, StorageSettings
from orchestrator.models import Family, GenerationParams, JobSpec, TaskKind, Tier
from orchestrator.service import GenerateRequest, Orchestrator


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Overhead:
    images: int
    cpu_ms_per_image: float
    wall_s: float


async def cpu_per_image(config: Config, count: int = 40) -> Overhead:
    """Zero-latency nodes (time scale ~0), 512² PNGs: CPU of submit -> file + thumbnail + DB row + event."""
    async with Orchestrator(config) as orch:
        # Warm up connections, caches and the thread pool so the measurement is the steady state.
        await orch.wait_batch(await orch.generate(GenerateRequest(prompt="warm up", count=8, seed=1)))
        c0, t0 = time.process_time(), time.perf_counter()
        result = await orch.wait_batch(await orch.generate(GenerateRequest(prompt="cpu", count=count, seed=10)))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    assert len(result.images) == count, result.failed
    return Overhead(count, cpu * 1000 / count, wall)


@dataclass
class Lag:
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int
    images: int


async def loop_lag(config: Config, count: int = 12) -> Lag:
    """Event-loop lag (how late a 5 ms timer fires) while 1024² SDXL images stream in."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(max(0.0, time.perf_counter() - t - 0.005) * 1000)

    async with Orchestrator(config) as orch:
        task = asyncio.create_task(probe())
        req = GenerateRequest(prompt="lag", family=Family.SDXL, count=count, seed=5, steps=6, task=TaskKind.STANDARD)
        result = await orch.wait_batch(await orch.generate(req))
        stop.set()
        await task
    qs = statistics.quantiles(lags, n=100)
    return Lag(qs[49], qs[98], max(lags), len(lags), len(result.images))


@dataclass
class Memory:
    jobs: int
    rss_before_mb: float
    rss_after_mb: float

    @property
    def per_job_kb(self) -> float:
        return (self.rss_after_mb - self.rss_before_mb) * 1024 / self.jobs


async def queued_memory(data_dir: Path, jobs: int = 1000) -> Memory:
    """RSS with 1,000 jobs queued (the only node is down, so they all wait)."""
    from bench.farm import free_port

    node = NodeConfig(
        id="nowhere",
        name="down",
        tier=Tier.PREMIUM,
        host="127.0.0.1",
        port=free_port(),
        capabilities=("sd15",),
    )
    base = Config(nodes=(node,))
    cfg = base.with_settings(storage=StorageSettings(data_dir=data_dir))
    async with Orchestrator(cfg) as orch:
        before = rss_mb()
        p = GenerationParams(prompt="a queued lighthouse " * 8, checkpoint="v1-5-pruned-emaonly.safetensors")
        specs = [JobSpec(params=replace(p, seed=i), task=TaskKind.DRAFT, index=i) for i in range(jobs)]
        batch = await orch.submit(specs)
        after = rss_mb()
        # Nothing listens on the node's port: every job is still queued, so all of them are cancelled.
        assert await orch.cancel_batch(batch) == jobs
    return Memory(jobs, before, after)


def queued_memory_fresh(data_dir: Path, jobs: int = 1000) -> Memory:
    """
    `queued_memory` in a fresh Python process: the RSS of an orchestrator holding the jobs, as a bot would be.

    In the bench's own process the figure carries everything the sections before it left in the allocator (the
    funnel and voting runs start some thirty orchestrators): 178 MB there against 111 MB here.
    """
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "bench.overhead", str(data_dir), str(jobs)]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True, timeout=300)
    return Memory(**json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    measured = asyncio.run(queued_memory(Path(sys.argv[1]), int(sys.argv[2])))
    print(json.dumps(dataclasses.asdict(measured)))
