"""Helpers shared by the `vibes` subcommands: config loading, the orchestrator life cycle, terminal progress."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from orchestrator.config import Config, load_config
from orchestrator.events import (
    BatchDone,
    Event,
    JobFailed,
    JobFinished,
    JobProgress,
    JobQueued,
    JobRetried,
    JobStarted,
    Subscription,
)


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="DIR", help="config directory (default: $VIBES_CONFIG or ./config)")


def load(args: argparse.Namespace, *, out: str | None = None) -> Config:
    """
    Load the config; `out` (a --out DIR) becomes the data directory of this run.

    With --out the run keeps everything in that directory, its database too (a SQLite file there, whatever
    storage.database or VIBES_DATABASE_URL say): a demo or a one-off batch never writes into a shared database.
    """
    config = load_config(getattr(args, "config", None))
    if out:
        storage = replace(config.settings.storage, data_dir=Path(out), database="")
        config = config.with_settings(storage=storage)
    return config


class TerminalProgress:
    """One progress line per batch on a terminal (nothing when the stream is not a TTY)."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr, *, force: bool = False) -> None:
        self.total = total
        self.label = label
        self.stream = stream
        self.enabled = force or stream.isatty()
        self.done = 0
        self.failed = 0
        self.steps: dict[str, float] = {}
        self.per_node: dict[str, int] = {}
        self.moves: list[str] = []
        self.t0 = time.monotonic()
        self._last = ""

    def feed(self, ev: Event) -> None:
        if isinstance(ev, JobProgress):
            self.steps[ev.job_id] = ev.step / max(1, ev.total)
        elif isinstance(ev, JobStarted):
            self.steps.setdefault(ev.job_id, 0.0)
        elif isinstance(ev, JobFinished):
            self.done += 1
            self.steps.pop(ev.job_id, None)
            self.per_node[ev.image.node_id] = self.per_node.get(ev.image.node_id, 0) + 1
        elif isinstance(ev, JobFailed):
            self.failed += 1
            self.steps.pop(ev.job_id, None)
        elif isinstance(ev, JobRetried):
            self.steps.pop(ev.job_id, None)
            self.moves.append(f"moved off {ev.from_node}: {ev.reason}")
        elif isinstance(ev, (JobQueued, BatchDone)):
            pass
        self.render()

    def render(self, final: bool = False) -> None:
        if not self.enabled:
            return
        frac = (self.done + self.failed + sum(self.steps.values())) / max(1, self.total)
        width = 24
        fill = int(frac * width)
        bar = "█" * fill + "░" * (width - fill)
        nodes = " ".join(f"{k}:{v}" for k, v in sorted(self.per_node.items()))
        line = f"{self.label:<9} {bar} {self.done}/{self.total}"
        if self.failed:
            line += f" ({self.failed} failed)"
        line += f"  {time.monotonic() - self.t0:5.1f}s  {nodes}"
        if line == self._last and not final:
            return
        self._last = line
        self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
        self.stream.flush()


async def follow(sub: Subscription, batch_id: str, progress: TerminalProgress) -> None:
    """Feed a batch's events to a progress line until the batch is done."""
    async for ev in sub:
        if getattr(ev, "batch_id", None) != batch_id:
            continue
        progress.feed(ev)
        if isinstance(ev, BatchDone):
            break
    progress.render(final=True)
    if progress.enabled:
        for m in progress.moves:
            progress.stream.write(f"  {m}\n")
