"""The coalescing editor, driven through a recording sink (no Discord connection)."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
import pytest

from bot.progress import CoalescingEditor, MessageSink, MessageState


def snowflake(age_s: float = 0.0) -> int:
    return discord.utils.time_snowflake(datetime.now(UTC) - timedelta(seconds=age_s))


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = "x"
        self.headers = headers or {}


@dataclass
class RecordingSink(MessageSink):
    edits: list[tuple[float, int, str | None]] = field(default_factory=list)
    sent: list[tuple[int, str | None]] = field(default_factory=list)
    fail_next: list[Exception] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def edit(self, channel: Any, message_id: int, kwargs: dict[str, Any]) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.edits.append((time.monotonic(), message_id, kwargs["content"]))
        self.changed.set()

    async def send(self, channel: Any, kwargs: dict[str, Any]) -> Any:
        mid = snowflake()
        self.sent.append((mid, kwargs["content"]))
        self.changed.set()
        return type("Msg", (), {"id": mid, "created_at": discord.utils.snowflake_time(mid)})()


def http_error(status: int, code: int, headers: dict[str, str] | None = None) -> discord.HTTPException:
    return discord.HTTPException(FakeResponse(status, headers), {"code": code, "message": "nope"})


async def test_only_latest_state_is_sent_and_rate_is_bounded():
    """Many updates in a burst give one edit per interval, ending with the last state."""
    sink = RecordingSink()
    ed = CoalescingEditor(interval_s=0.05, sink=sink)
    mid = snowflake()
    ed.track("p", object(), mid)  # type: ignore[arg-type]
    for i in range(30):
        ed.update("p", MessageState(content=f"step {i}"))
        if i % 10 == 9:
            await asyncio.wait_for(ed.wait_idle(), 5)
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert sink.edits[-1][2] == "step 29"
    assert len(sink.edits) <= 4
    times = [t for t, _, _ in sink.edits]
    assert all(b - a >= 0.05 * 0.95 for a, b in itertools.pairwise(times))


async def test_no_edit_when_nothing_changed():
    """Sending the state already shown makes no request."""
    sink = RecordingSink()
    ed = CoalescingEditor(interval_s=0.01, sink=sink)
    ed.track("p", object(), snowflake(), shown=MessageState(content="same"))  # type: ignore[arg-type]
    ed.update("p", MessageState(content="same"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert sink.edits == []
    ed.update("p", MessageState(content="new"))
    ed.update("p", MessageState(content="new"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert [c for _, _, c in sink.edits] == ["new"]


async def test_429_is_retried_with_the_latest_state():
    """A 429 delays the edit; the final state still lands."""
    sink = RecordingSink(fail_next=[http_error(429, 0, {"Retry-After": "0.02"})])
    ed = CoalescingEditor(interval_s=0.01, sink=sink)
    ed.track("p", object(), snowflake(), fresh=False)  # type: ignore[arg-type]
    ed.update("p", MessageState(content="a"))
    ed.update("p", MessageState(content="final"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert sink.edits[-1][2] == "final"
    assert ed.rate_limited == 1


async def test_rate_limited_exception_is_handled():
    """discord.RateLimited (max_ratelimit_timeout) is a delay, not a failure."""
    sink = RecordingSink(fail_next=[discord.RateLimited(0.02)])
    ed = CoalescingEditor(interval_s=0.01, sink=sink)
    ed.track("p", object(), snowflake(), fresh=False)  # type: ignore[arg-type]
    ed.update("p", MessageState(content="x"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert [c for _, _, c in sink.edits] == ["x"]


async def test_error_30046_posts_a_new_message_and_reports_it():
    """A message Discord refuses to edit (30046) is replaced by a new one, and edits go there next."""
    sink = RecordingSink(fail_next=[http_error(400, 30046)])
    replaced: list[tuple[str, int]] = []

    async def on_replaced(key: str, msg: Any) -> None:
        replaced.append((key, msg.id))

    ed = CoalescingEditor(interval_s=0.01, sink=sink)
    old = snowflake()
    ed.track("p", object(), old, fresh=False, on_replaced=on_replaced)  # type: ignore[arg-type]
    ed.update("p", MessageState(content="one"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert [c for _, c in sink.sent] == ["one"]
    assert replaced == [("p", sink.sent[0][0])]
    ed.update("p", MessageState(content="two"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert sink.edits[-1][1:] == (sink.sent[0][0], "two")


async def test_message_older_than_max_age_is_replaced_without_trying_an_edit():
    """Messages past max_edit_age_s are not edited at all."""
    sink = RecordingSink()
    ed = CoalescingEditor(interval_s=0.01, max_age_s=60, sink=sink)
    ed.track("p", object(), snowflake(age_s=120), fresh=False)  # type: ignore[arg-type]
    ed.update("p", MessageState(content="late"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert sink.edits == []
    assert [c for _, c in sink.sent] == ["late"]
    assert ed.reposts == 1


async def test_final_state_forgets_the_message():
    """After a final update is shown, the key is no longer tracked."""
    sink = RecordingSink()
    ed = CoalescingEditor(interval_s=0.01, sink=sink)
    ed.track("p", object(), snowflake(), fresh=False)  # type: ignore[arg-type]
    ed.update("p", MessageState(content="done"), final=True)
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert not ed.tracks("p")
    assert not ed.update("p", MessageState(content="after"))


async def test_close_cancels_pending_edits():
    """close() leaves no task behind."""
    sink = RecordingSink()
    ed = CoalescingEditor(interval_s=10, sink=sink)
    ed.track("p", object(), snowflake())  # type: ignore[arg-type]
    ed.update("p", MessageState(content="never"))
    await ed.close()
    assert sink.edits == []


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(status):
    """A transient 5xx is retried."""
    sink = RecordingSink(fail_next=[http_error(status, 0)])
    ed = CoalescingEditor(interval_s=0.01, sink=sink)
    ed.track("p", object(), snowflake(), fresh=False)  # type: ignore[arg-type]
    ed.update("p", MessageState(content="ok"))
    await asyncio.wait_for(ed.wait_idle(), 5)
    assert [c for _, _, c in sink.edits] == ["ok"]
