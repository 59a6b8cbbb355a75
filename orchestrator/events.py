"""
Typed events from the orchestrator to its front ends, and the bus that carries them.

Each subscriber has its own queue. Publishing never awaits: a slow subscriber gets its
progress-type events coalesced (only the newest per key is kept) and, past its bound, the
oldest coalescable events dropped; terminal events are never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from orchestrator.models import ImageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event."""

    #: key under which a newer event of the same kind replaces an older unread one; None = never coalesced
    def coalesce_key(self) -> tuple[object, ...] | None:
        return None


# ---- jobs


@dataclass(frozen=True, slots=True)
class JobQueued(Event):
    """A job entered the queue."""

    job_id: str
    batch_id: str
    session_id: str | None = None
    stage_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobStarted(Event):
    """A node started executing a job."""

    job_id: str
    batch_id: str
    node_id: str
    attempt: int
    session_id: str | None = None
    stage_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobProgress(Event):
    """Sampler progress of a running job."""

    job_id: str
    batch_id: str
    node_id: str
    step: int
    total: int
    session_id: str | None = None
    stage_id: str | None = None

    def coalesce_key(self) -> tuple[object, ...] | None:
        return ("progress", self.job_id)


@dataclass(frozen=True, slots=True)
class JobPreview(Event):
    """A live preview image of a running job (JPEG or PNG bytes)."""

    job_id: str
    batch_id: str
    node_id: str
    image: bytes = field(repr=False)
    mime: str = "image/jpeg"
    session_id: str | None = None
    stage_id: str | None = None

    def coalesce_key(self) -> tuple[object, ...] | None:
        return ("preview", self.job_id)


@dataclass(frozen=True, slots=True)
class JobRetried(Event):
    """A job was taken from a node and put back in the queue."""

    job_id: str
    batch_id: str
    from_node: str
    reason: str
    attempt: int
    session_id: str | None = None
    stage_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobFinished(Event):
    """A job's image is stored and recorded."""

    job_id: str
    batch_id: str
    image: ImageRecord
    session_id: str | None = None
    stage_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobFailed(Event):
    """A job gave up for good (or was cancelled)."""

    job_id: str
    batch_id: str
    error: str
    cancelled: bool = False
    session_id: str | None = None
    stage_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchDone(Event):
    """Every job of a batch is terminal."""

    batch_id: str
    done: int
    failed: int
    session_id: str | None = None
    stage_id: str | None = None


# ---- nodes


@dataclass(frozen=True, slots=True)
class NodeHealthChanged(Event):
    """A node went down or came back."""

    node_id: str
    healthy: bool
    reason: str = ""


# ---- sessions


@dataclass(frozen=True, slots=True)
class SessionEvent(Event):
    """Base of session events; front ends route them by session_id."""

    session_id: str


@dataclass(frozen=True, slots=True)
class StageStarted(SessionEvent):
    """A session stage or round was planned and its jobs queued."""

    stage_id: str
    name: str
    index: int
    total: int


@dataclass(frozen=True, slots=True)
class StageDone(SessionEvent):
    """Every image of a stage is delivered (or failed); the stage is open for votes."""

    stage_id: str
    name: str
    done: int
    failed: int


@dataclass(frozen=True, slots=True)
class VotesChanged(SessionEvent):
    """A vote was cast, changed or withdrawn on an image."""

    stage_id: str
    image_id: str
    tally: int

    def coalesce_key(self) -> tuple[object, ...] | None:
        return ("votes", self.image_id)


@dataclass(frozen=True, slots=True)
class SpeculationChanged(SessionEvent):
    """The next stage is (active) or is no longer being prepared from the current votes on idle GPUs."""

    stage_id: str
    active: bool

    def coalesce_key(self) -> tuple[object, ...] | None:
        return ("speculation", self.stage_id)


@dataclass(frozen=True, slots=True)
class DeadlineMissed(SessionEvent):
    """A stage's deadline passed but the session could not move on (nothing selected, a limit...)."""

    stage_id: str
    #: why, in words for the people in the session
    reason: str


@dataclass(frozen=True, slots=True)
class SessionEnded(SessionEvent):
    """A session ended (finished or ended by a user)."""

    reason: str = ""


class Subscription:
    """One subscriber's queue; iterate it or call get()."""

    def __init__(self, bus: EventBus, maxsize: int, accept: Callable[[Event], bool] | None) -> None:
        self._bus = bus
        self._maxsize = maxsize
        self._accept = accept
        # key -> event; uncoalescable events get a unique key so order is kept
        self._items: OrderedDict[object, Event] = OrderedDict()
        self._seq = 0
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _put(self, event: Event) -> None:
        if self._closed or (self._accept is not None and not self._accept(event)):
            return
        key = event.coalesce_key()
        if key is not None and key in self._items:
            # Keep the position of the first unread one, so progress order stays roughly fair.
            self._items[key] = event
        else:
            self._seq += 1
            self._items[key if key is not None else ("seq", self._seq)] = event
            if len(self._items) > self._maxsize:
                self._drop_one()
        self._ready.set()

    def _drop_one(self) -> None:
        for k, ev in self._items.items():
            if ev.coalesce_key() is not None:
                del self._items[k]
                self.dropped += 1
                return
        # Only terminal/uncoalescable events left: keep them all (they are bounded by jobs).

    def pending(self) -> int:
        return len(self._items)

    def get_nowait(self) -> Event | None:
        if not self._items:
            self._ready.clear()
            return None
        _, ev = self._items.popitem(last=False)
        if not self._items:
            self._ready.clear()
        return ev

    async def get(self) -> Event:
        while True:
            ev = self.get_nowait()
            if ev is not None:
                return ev
            if self._closed:
                raise StopAsyncIteration
            await self._ready.wait()

    def close(self) -> None:
        self._closed = True
        self._bus._remove(self)
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()


class EventBus:
    """Fan-out of events to subscribers; publish() never blocks."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []

    def subscribe(self, *, maxsize: int = 1000, accept: Callable[[Event], bool] | None = None) -> Subscription:
        sub = Subscription(self, maxsize, accept)
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subs):
            try:
                sub._put(event)
            except Exception:  # a broken filter must not stop the scheduler
                log.exception("event subscriber filter failed for %s", type(event).__name__)
