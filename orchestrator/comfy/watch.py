"""
The buffers between a node's WebSocket and the code waiting on its prompts.

One PromptWatch per watched prompt,
and a bounded buffer for the events of prompts nobody watches yet.

Nothing a node sends can grow them without bound: buffered events are capped per prompt and in total, previews
nobody watches are dropped, and a watch keeps only the newest preview. Terminal events are never dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.comfy.protocol import (
    Executing,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionSuccess,
    PreviewFrame,
    ProgressMsg,
    PromptEvent,
)

#: prompts whose events are buffered before anyone watches them; older buffers are dropped first
MAX_UNWATCHED = 512
#: events buffered for one prompt nobody watches; past it the oldest progress goes first (terminal events stay)
MAX_PENDING_EVENTS = 64
#: events buffered for all prompts nobody watches together; past it the oldest prompts' buffers go
MAX_PENDING_TOTAL = 2048
#: events queued for one watched prompt and not yet read; past it the oldest progress goes first
MAX_WATCH_EVENTS = 1024
#: previews queued for one watched prompt: a live view only ever shows the newest
MAX_WATCH_PREVIEWS = 1

#: the events that end a prompt
TERMINAL = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)
#: events a reader can lose without losing anything it acts on (a later one says the same, newer)
_MINOR = (ProgressMsg, Executing, PreviewFrame)


def trim_events(events: deque[PromptEvent], cap: int) -> int:
    """Drop events until at most `cap` remain: the oldest minor one first, else the oldest non-terminal one."""
    dropped = 0
    while len(events) > cap:
        victim = next((i for i, ev in enumerate(events) if isinstance(ev, _MINOR)), None)
        if victim is None:
            victim = next((i for i, ev in enumerate(events) if not isinstance(ev, TERMINAL)), None)
        if victim is None:
            break
        del events[victim]
        dropped += 1
    return dropped


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What a client holds in memory for prompts (bounded by the caps above)."""

    pending_prompts: int
    pending_events: int
    watched_prompts: int
    watched_events: int
    #: bytes of preview images held anywhere (pending buffers hold none: unwatched previews are dropped)
    preview_bytes: int


class PromptWatch:
    """
    Async iterator over the events of one prompt; ends after its terminal event.

    Its queue is bounded: only the newest preview is kept, and past MAX_WATCH_EVENTS the oldest progress is
    dropped. Terminal events are never dropped.
    """

    def __init__(self, prompt_id: str, on_close: Callable[[PromptWatch], None]) -> None:
        self.prompt_id = prompt_id
        #: how many times the client's socket dropped while this watch was open
        self.disconnects = 0
        #: events dropped because the reader fell behind (old previews and progress only)
        self.dropped = 0
        self.terminal = False
        self._done = False
        self._closed = False
        self._events: deque[PromptEvent] = deque()
        self._ready = asyncio.Event()
        self._on_close = on_close

    def _put(self, ev: PromptEvent) -> None:
        if self.terminal or self._closed:
            return
        if isinstance(ev, TERMINAL):
            self.terminal = True
        elif isinstance(ev, PreviewFrame):
            held = [i for i, old in enumerate(self._events) if isinstance(old, PreviewFrame)]
            for i in reversed(held[: max(0, len(held) - MAX_WATCH_PREVIEWS + 1)]):
                del self._events[i]
                self.dropped += 1
        self._events.append(ev)
        self.dropped += trim_events(self._events, MAX_WATCH_EVENTS)
        self._ready.set()

    @property
    def queued(self) -> int:
        """Events waiting to be read."""
        return len(self._events)

    @property
    def preview_bytes(self) -> int:
        """Bytes of the preview images waiting to be read."""
        return sum(len(ev.image) for ev in self._events if isinstance(ev, PreviewFrame))

    def __aiter__(self) -> PromptWatch:
        return self

    async def __anext__(self) -> PromptEvent:
        while not self._events:
            if self._done or self._closed:
                self._done = True
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        ev = self._events.popleft()
        if isinstance(ev, TERMINAL):
            self._done = True
            self._release()
        return ev

    def close(self) -> None:
        """Stop watching; a pending __anext__ ends with StopAsyncIteration once the queued events are read."""
        if not self._closed:
            self._closed = True
            self._ready.set()
            self._release()

    def _release(self) -> None:
        self._on_close(self)


class Pending:
    """Events of a prompt nobody watches yet (no previews: a live view that is not there cannot show them)."""

    __slots__ = ("events", "terminal")

    def __init__(self) -> None:
        self.events: deque[PromptEvent] = deque()
        self.terminal = False
