"""
Active/standby for real: `vibes sim`, two `vibes bot` processes and the fake Discord, on one PostgreSQL database.

The simulated farm is its own process (it outlives either bot), the bots are real `vibes bot` processes sharing
the database and the image directory, and the fake Discord runs in this process so that a test can click and read
what was posted. Each bot's log is read line by line as it comes: it says when the instance stands by, takes the
lock, acts, submits a prompt (with the prompt id) and gets fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import web

from tests.fakes.discord_models import FakeMessage
from tests.fakes.fake_discord import FakeDiscord

REPO = Path(__file__).resolve().parents[2]

SUBMITTED = re.compile(r"↗ job=(\w+) node=([\w-]+) prompt=([\w-]+)")
DELIVERED = re.compile(r"← job=(\w+) node=([\w-]+)")
PROMPT_POSTED = re.compile(r"HTTP Request: POST (http://[\w.:]+)/prompt \"HTTP/1.1 200")
STANDING_BY = re.compile(r"instance (\w+) \(.* pid (\d+)\) standing by")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Shape:
    """The funnel and the farm speed of a run: small enough for CI, slow enough to kill inside a stage."""

    drafts: int = 6
    refined: int = 4
    steps: int = 4
    #: the simulator's time scale (1.0: the seed GPUs' real speeds)
    time_scale: float = 0.25
    #: extra seconds (before scaling) each GET /view waits on the SDXL-capable nodes: a download to kill inside
    slow_view_s: float = 0.0


def write_config(directory: Path, shape: Shape) -> None:
    """gpus.yaml (the shipped simulated farm on free loopback ports) and a settings.yaml for fast runs."""
    directory.mkdir(parents=True, exist_ok=True)
    gpus = yaml.safe_load((REPO / "config" / "gpus.yaml").read_text())
    for node in gpus["nodes"]:
        node["port"] = free_port()
        if shape.slow_view_s and "sdxl" in node["capabilities"]:
            node["sim"].setdefault("faults", {})["slow_view_seconds"] = shape.slow_view_s
    (directory / "gpus.yaml").write_text(yaml.safe_dump(gpus))
    stage = "{{name: {0}, count: {1}, family: {2}, width: {3}, height: {3}, steps: {4}, task: {5}{6}}}"
    settings = f"""
health: {{interval_s: 0.5, timeout_s: 2, failures_to_down: 2}}
scheduler: {{stall_timeout_s: 20, http_timeout_s: 10}}
llm: {{enabled: false}}
discord: {{progress_interval_s: 0.2, post_retries: 3, post_retry_s: 0.05}}
limits: {{feedback_cooldown_s: 0, session_cooldown_s: 0}}
leadership: {{keepalive_s: 0.5, poll_s: 0.1, fence_s: 0.5, grace_s: 2.0}}
funnel:
  final_upscale: false
  stages:
    - {stage.format("drafts", shape.drafts, "sd15", 512, shape.steps, "draft", "")}
    - {stage.format("refined", shape.refined, "sdxl", 1024, shape.steps, "standard", ", denoise: 0.6")}
    - {stage.format("polished", 2, "sdxl", 1024, shape.steps, "quality", ", denoise: 0.45")}
    - {stage.format("final", 1, "sdxl", 1024, shape.steps, "premium", ", denoise: 0.35")}
"""
    (directory / "settings.yaml").write_text(settings)


@dataclass
class Process:
    """A child process whose output lines are kept with the (monotonic) time each arrived."""

    name: str
    proc: asyncio.subprocess.Process
    lines: list[tuple[float, str]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    echo: Callable[[str], None] | None = None

    def start_reading(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                self.readers.append(asyncio.create_task(self._read(stream)))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if self.echo is not None:
                self.echo(f"[{self.name}] {line}")
            async with self.changed:
                self.lines.append((time.monotonic(), line))
                self.changed.notify_all()
        async with self.changed:
            self.changed.notify_all()

    def find(self, pattern: str | re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        return [(t, m) for t, line in self.lines if (m := rx.search(line))]

    async def wait_line(self, pattern: str | re.Pattern[str], timeout: float = 60, count: int = 1) -> float:
        """The arrival time of the count-th line matching pattern (fails when the process ends first)."""

        def ready() -> bool:
            return len(self.find(pattern)) >= count or self.proc.returncode is not None

        try:
            async with self.changed:
                await asyncio.wait_for(self.changed.wait_for(ready), timeout)
        except TimeoutError:
            pass
        found = self.find(pattern)
        if len(found) < count:
            tail = "\n".join(line for _, line in self.lines[-30:])
            state = "still running" if self.proc.returncode is None else f"exited ({self.proc.returncode})"
            raise AssertionError(
                f"{self.name} {state}: {len(found)} of {count} lines {pattern!r} within {timeout:g} s; its last "
                f"lines:\n{tail}"
            )
        return found[count - 1][0]

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for r in self.readers:
            with contextlib.suppress(asyncio.CancelledError):
                await r
        assert self.proc.returncode is not None
        return self.proc.returncode


class RecordingDiscord(FakeDiscord):
    """The fake Discord, recording when each write arrived, and able to hold a stage's gallery posts."""

    def __init__(self) -> None:
        super().__init__()
        #: (monotonic time, method, path) of every REST write (POST/PATCH/PUT/DELETE) the bots made
        self.writes: list[tuple[float, str, str]] = []
        self.hold_stage: str | None = None
        self.post_held = asyncio.Event()
        self.release_posts = asyncio.Event()

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            self.writes.append((time.monotonic(), request.method, request.path))
        return await super()._rest(request)

    async def _add_message(self, msg: FakeMessage) -> None:
        # A held post is one Discord received but has not answered yet: the poster can die in between.
        if self.hold_stage is not None and msg.content.startswith(f"**{self.hold_stage}** · #"):
            self.post_held.set()
            await self.release_posts.wait()
        await super()._add_message(msg)


class Cluster:
    """The simulated farm, the fake Discord and any number of bot processes on one database and image directory."""

    def __init__(self, root: Path, database_url: str, shape: Shape, *, echo: Callable[[str], None] | None = None):
        self.root = root
        self.config_dir = root / "config"
        self.data_dir = root / "data"
        self.database_url = database_url
        self.shape = shape
        self.echo = echo
        self.fake = RecordingDiscord()
        self.sim: Process | None = None
        self.bots: list[Process] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "VIBES_", "OLLAMA_"))}
        env.update(
            DISCORD_TOKEN=self.fake.token,
            DISCORD_GUILD_ID=str(self.fake.guild_id),
            DISCORD_API_BASE=self.fake.api_base,
            DISCORD_GATEWAY_URL=self.fake.ws_url,
            VIBES_CONFIG=str(self.config_dir),
            VIBES_DATA=str(self.data_dir),
            VIBES_DATABASE_URL=self.database_url,
            PYTHONUNBUFFERED="1",
        )
        return env

    async def _spawn(self, name: str, *args: str) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator.cli",
            *args,
            cwd=str(REPO),
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        p = Process(name, proc, echo=self.echo)
        p.start_reading()
        return p

    async def start(self) -> None:
        write_config(self.config_dir, self.shape)
        await self.fake.start()
        self.sim = await self._spawn("sim", "sim", "--time-scale", str(self.shape.time_scale))
        nodes = len(yaml.safe_load((self.config_dir / "gpus.yaml").read_text())["nodes"])
        await self.sim.wait_line("simulated ComfyUI at", count=nodes, timeout=60)

    async def start_bot(self, name: str) -> Process:
        """A `vibes bot` process; returns once it stands by (it may take the lock at once if nobody holds it)."""
        bot = await self._spawn(name, "bot")
        self.bots.append(bot)
        await bot.wait_line(STANDING_BY, timeout=60)
        return bot

    async def stop(self) -> None:
        # No graceful goodbye needed from the bots at the end of a scenario: the server frees their sessions.
        for bot in self.bots:
            await bot.stop(signal.SIGKILL)
        if self.sim is not None:
            await self.sim.stop()
        await self.fake.stop()

    @staticmethod
    def instance_id(bot: Process) -> str:
        return bot.find(STANDING_BY)[0][1].group(1)

    # ------------------------------------------------------------------ interactions

    async def answered_probe(self, timeout: float = 60) -> float:
        """Send /gpus until an instance answers; the monotonic time of the first answer."""
        user = self.fake.users[3]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            handle = await self.fake.run_slash(user, "gpus")
            with contextlib.suppress(TimeoutError):
                await handle.response(timeout=0.25)
                return time.monotonic()
        raise AssertionError(f"no instance answered an interaction within {timeout} s")


@contextlib.asynccontextmanager
async def running_cluster(
    root: Path, database_url: str, shape: Shape, *, echo: Callable[[str], None] | None = None
) -> AsyncIterator[Cluster]:
    cluster = Cluster(root, database_url, shape, echo=echo)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


def submissions(bot: Process) -> list[tuple[float, str]]:
    """(arrival time, node address) of every prompt a node accepted from this bot, from its log.

    httpx logs each answered request, so a prompt shows up even when the process died before recording it.
    """
    return [(t, m.group(1)) for t, m in bot.find(PROMPT_POSTED)]


def prompt_ids(bot: Process) -> set[str]:
    return {m.group(3) for _, m in bot.find(SUBMITTED)}
