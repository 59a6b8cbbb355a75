"""
One supervisor for every long-lived task: log a crash with its traceback, restart with backoff, count restarts.

A long-lived loop (a node's WebSocket listener, the health loop, a pull loop, the reconciler, a relay consumer)
must never end because of one bad input; the loops catch per item, and this is the net under them. A task that
returns normally is finished and is not restarted; a crash is restarted after a backoff that resets once the
task has run for a while without crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from orchestrator.backoff import Backoff

log = logging.getLogger(__name__)

#: a task that ran this long before crashing starts its backoff from the beginning again
STABLE_AFTER_S = 30.0

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class TaskHealth:
    """One supervised task as /gpus and `vibes doctor` show it."""

    name: str
    alive: bool
    restarts: int
    last_error: str | None


@dataclass(slots=True, eq=False)
class _Entry:
    name: str
    factory: TaskFactory
    backoff: Backoff
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    last_error: str | None = None
    finished: bool = False


class Supervisor:
    """Runs named long-lived tasks and restarts the ones that crash."""

    def __init__(self, *, backoff: tuple[float, float] = (0.05, 5.0)) -> None:
        self._backoff = backoff
        self._entries: dict[str, _Entry] = {}
        self._stopping = False
        #: set (and replaced) every time a task crashes; tests wait on it instead of sleeping
        self.crashed = asyncio.Event()

    def spawn(self, name: str, factory: TaskFactory) -> None:
        """Run `factory()` as the task `name`, restarting it whenever it raises. A name is unique while alive."""
        old = self._entries.get(name)
        if old is not None and old.task is not None and not old.task.done():
            raise RuntimeError(f"supervised task {name} is already running")
        entry = _Entry(name, factory, Backoff(*self._backoff))
        if old is not None:
            entry.restarts = old.restarts
        self._entries[name] = entry
        self._stopping = False
        entry.task = asyncio.create_task(self._keep(entry), name=name)

    async def _keep(self, entry: _Entry) -> None:
        while True:
            started = time.monotonic()
            try:
                await entry.factory()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                entry.restarts += 1
                entry.last_error = f"{type(e).__name__}: {e}"[:300]
                if time.monotonic() - started >= STABLE_AFTER_S:
                    entry.backoff.reset()
                delay = entry.backoff.delay()
                log.error("task %s crashed (restart #%d in %.2fs)", entry.name, entry.restarts, delay, exc_info=True)
                self.crashed.set()
                self.crashed = asyncio.Event()
                await asyncio.sleep(delay)
                continue
            entry.finished = True
            return

    async def cancel(self, name: str) -> None:
        """Stop one task (it is not restarted) and wait for it to end."""
        entry = self._entries.pop(name, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.task

    async def stop(self) -> None:
        """Cancel every task and wait for them to end."""
        self._stopping = True
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def restarts(self, name: str) -> int:
        """How many times the task `name` crashed and was restarted."""
        entry = self._entries.get(name)
        return entry.restarts if entry is not None else 0

    @property
    def total_restarts(self) -> int:
        """Restarts of every task this supervisor ran."""
        return sum(e.restarts for e in self._entries.values())

    def status(self) -> list[TaskHealth]:
        """Every task, with whether it is alive (or finished by returning) and its restart count."""
        return [
            TaskHealth(e.name, e.task is not None and not e.task.done(), e.restarts, e.last_error)
            for e in self._entries.values()
        ]

    def dead(self) -> list[str]:
        """Tasks that ended without returning normally or being stopped: always empty unless something is wrong."""
        out = []
        for e in self._entries.values():
            if e.task is None or not e.task.done() or e.finished:
                continue
            if e.task.cancelled() and self._stopping:
                continue
            out.append(e.name)
        return out
