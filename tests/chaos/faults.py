"""
The faults a chaos schedule draws from, and the seeded schedule itself.

Each fault acts on the real peers (a simulated ComfyUI node, the SQLite file through a second connection) or, for
the bot's own disk, which no peer can fill, on the image store's one write function. A fault is applied at a
random moment of the batch and, where it has one, undone after a random while.
"""

from __future__ import annotations

import asyncio
import errno
import random
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.comfy.sim import ComfySimulator, Garbage, SimFarm
from orchestrator.service import Orchestrator
from orchestrator.store import ImageStore
from tests.orchestrator.farm import scheduler_of


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault of a schedule: what, where, when (seconds after the batch starts) and for how long."""

    kind: str
    node: str | None
    at: float
    duration: float
    #: a small number the fault may use (e.g. which of the node's next prompts hangs)
    n: int = 1

    def describe(self) -> str:
        where = f"@{self.node}" if self.node else ""
        return f"{self.kind}{where} t={self.at:.2f}s d={self.duration:.2f}s"


@dataclass
class World:
    """What faults act on: the simulated farm, the DB file and the running orchestrator's image store."""

    farm: SimFarm
    db_path: Path
    store: ImageStore | None = None
    #: faults set here are undone at the end of a run even if their own undo never came
    undo: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    disk_full: bool = False
    #: the orchestrator running now and the batches it runs (a user's cancel acts on them)
    orch: Orchestrator | None = None
    batches: list[str] = field(default_factory=list)

    def sim(self, node: str) -> ComfySimulator:
        return self.farm.simulators[node]


FaultAction = Callable[[World, Fault], Awaitable[None]]


async def _kill(world: World, f: Fault) -> None:
    """The node's process exits (every connection refused) and, unless the schedule says never, comes back."""
    sim = world.sim(f.node or "")
    sim.kill()
    world.undo.append(sim.revive)
    if f.duration > 0:
        await asyncio.sleep(f.duration)
        await sim.revive()


async def _hang(world: World, f: Fault) -> None:
    """One of the node's next prompts accepts and then never progresses (until interrupted)."""
    sim = world.sim(f.node or "")
    sim.faults.hang_after = sim.stats.prompts_started + f.n


async def _error(world: World, f: Fault) -> None:
    """One of the node's next prompts ends with ComfyUI's execution_error (an out-of-memory)."""
    sim = world.sim(f.node or "")
    sim.faults.error_after = sim.stats.prompts_started + f.n


async def _drop_ws(world: World, f: Fault) -> None:
    """The node's WebSockets are cut without a close handshake; its prompts keep running."""
    world.sim(f.node or "").drop_websockets()


async def _slow_view(world: World, f: Fault) -> None:
    """Every GET /view of the node is answered late for a while."""
    sim = world.sim(f.node or "")
    sim.faults.slow_view_seconds = 2.0 / sim.time_scale  # two real seconds, whatever the time scale

    async def restore() -> None:
        sim.faults.slow_view_seconds = 0.0

    world.undo.append(restore)
    await asyncio.sleep(f.duration)
    await restore()


async def _db_lock(world: World, f: Fault) -> None:
    """Another process holds the DB's write lock for a while (a backup tool, a `sqlite3` shell)."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(world.db_path, timeout=10)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(60)
            conn.rollback()
        finally:
            conn.close()

    loop = asyncio.get_running_loop()
    holder = loop.run_in_executor(None, hold)

    async def unlock() -> None:
        release.set()
        await holder

    world.undo.append(unlock)
    await loop.run_in_executor(None, locked.wait, 10)
    await asyncio.sleep(f.duration)
    await unlock()


async def _disk_full(world: World, f: Fault) -> None:
    """The bot's own disk is full for a while (ENOSPC on every image write)."""
    world.disk_full = True

    async def restore() -> None:
        world.disk_full = False

    world.undo.append(restore)
    await asyncio.sleep(f.duration)
    await restore()


def install_disk(world: World, store: ImageStore) -> None:
    """Route the store's file writes through the world's disk-full switch (no peer can fill our disk)."""
    real = store._write_atomic

    def write(path: Path, data: bytes) -> None:
        if world.disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    store._write_atomic = write  # type: ignore[method-assign]
    world.store = store


def _for_a_while(world: World, sim: ComfySimulator, field_name: str, value: object, off: object) -> FaultAction:
    async def undo() -> None:
        setattr(sim.faults, field_name, off)

    async def act(world: World, f: Fault) -> None:
        setattr(sim.faults, field_name, value)
        world.undo.append(undo)
        await asyncio.sleep(f.duration)
        await undo()

    return act


async def _garbage_ws(world: World, f: Fault) -> None:
    """Malformed WebSocket frames: a burst of every kind now, then one after every real message for a while."""
    sim = world.sim(f.node or "")
    for kind in Garbage:
        await sim.inject_garbage(kind)
    await _for_a_while(world, sim, "malformed_ws", True, False)(world, f)


async def _bad_health(world: World, f: Fault) -> None:
    """Odd answers to health checks for a while: /system_stats with '16 GB' for a number, or a non-dict
    /object_info, or a gzip header over a plain body."""
    sim = world.sim(f.node or "")
    field_name, value, off = (
        ("bad_system_stats", "vram_text", None),
        ("bad_object_info", True, False),
        ("gzip_lie", True, False),
        ("bad_system_stats", "list", None),
    )[f.n % 4]
    await _for_a_while(world, sim, field_name, value, off)(world, f)


async def _bad_view(world: World, f: Fault) -> None:
    """/view answers non-image bytes, or drips its body, for a while."""
    sim = world.sim(f.node or "")
    if f.n % 2:
        await _for_a_while(world, sim, "view_garbage", True, False)(world, f)
    else:
        await _for_a_while(world, sim, "drip_view_bytes_per_s", 20_000.0, None)(world, f)


async def _wedge(world: World, f: Fault) -> None:
    """The node takes prompts and answers health checks but runs and reports nothing, for a while."""
    sim = world.sim(f.node or "")
    sim.faults.wedge = True

    async def undo() -> None:
        sim.unwedge()

    world.undo.append(undo)
    await asyncio.sleep(f.duration)
    await undo()


async def _cancel(world: World, f: Fault) -> None:
    """A user cancels a batch mid-way (End on a session): every job ends once, delivered or cancelled."""
    if world.orch is not None and scheduler_of(world.orch) is not None and world.batches:
        await world.orch.cancel_batch(world.batches[f.n % len(world.batches)])


#: fault kind -> what it does; "restart" is the harness's own (it replaces the orchestrator)
ACTIONS: dict[str, FaultAction] = {
    "kill": _kill,
    "hang": _hang,
    "error": _error,
    "drop_ws": _drop_ws,
    "slow_view": _slow_view,
    "db_lock": _db_lock,
    "disk_full": _disk_full,
    "cancel": _cancel,
    "garbage_ws": _garbage_ws,
    "bad_health": _bad_health,
    "bad_view": _bad_view,
    "wedge": _wedge,
}
KINDS: tuple[str, ...] = (*ACTIONS, "restart")
#: faults aimed at one node
NODE_FAULTS = frozenset(
    {"kill", "hang", "error", "drop_ws", "slow_view", "garbage_ws", "bad_health", "bad_view", "wedge"}
)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A seeded chaos schedule: the batches to run and the faults to inject."""

    seed: int
    counts: tuple[int, ...]
    faults: tuple[Fault, ...]

    @property
    def restart(self) -> Fault | None:
        return next((f for f in self.faults if f.kind == "restart"), None)

    def describe(self) -> str:
        batches = "+".join(str(c) for c in self.counts)
        return f"seed={self.seed} batches={batches} faults=[{', '.join(f.describe() for f in self.faults)}]"


def make_schedule(seed: int, nodes: tuple[str, ...], kinds: tuple[str, ...] = KINDS) -> Schedule:
    """The schedule for a seed: one or two batches and one to four faults at random moments of the first second."""
    rng = random.Random(seed)
    counts = tuple(rng.randint(8, 20) for _ in range(rng.choice((1, 1, 2))))
    faults: list[Fault] = []
    permanent_kill = False
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(kinds)
        if kind == "restart" and any(f.kind == "restart" for f in faults):
            continue
        node = rng.choice(nodes) if kind in NODE_FAULTS else None
        at = rng.uniform(0.0, 0.4)
        duration = rng.uniform(0.1, 1.0)
        if kind == "kill":
            # At most one node stays dead; the others come back (a process restart).
            if not permanent_kill and rng.random() < 0.4:
                permanent_kill, duration = True, 0.0
            elif any(f.kind == "kill" and f.node == node for f in faults):
                continue
        faults.append(Fault(kind, node, round(at, 3), round(duration, 3), n=rng.randint(1, 3)))
    return Schedule(seed, counts, tuple(sorted(faults, key=lambda f: f.at)))
