"""
Takeover and split-brain scenarios on a Cluster: what `make failover` runs and the tests assert.

Takeover: instance A is active and B stands by. A Draft Grid runs, two members vote, Continue starts the refined
stage, and A is SIGKILLed at one of five moments of that stage. B must take over and answer, post every image of
the stage exactly once, keep the buttons of A's galleries working, never submit a prompt while A could, and leave
no job unfinished in the database.

Split brain: A's lock connection is cut on the server (pg_terminate_backend; the process lives on). A must stop
acting (no prompt, no Discord write) before B starts.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import yaml

from tests.bot.helpers import custom_id, galleries, labels, wait_galleries, wait_thread
from tests.failover.cluster import (
    DELIVERED,
    SUBMITTED,
    Cluster,
    Process,
    Shape,
    prompt_ids,
    running_cluster,
    submissions,
)

MOMENTS = ("before any image", "mid-download", "mid-post", "after the last image", "during a vote")

ACTIVE = r"instance \w+ is active"
TOOK_LOCK = r"instance \w+ took the lock"
FENCED_LINE = r"fenced: no GPU work"
LOST_LINE = r"lost the lock"
CONNECTED = r"bot.client: connected as"
#: generous bounds: a hang fails the scenario instead of blocking the run; they are not what is measured
STAGE_TIMEOUT_S = 120.0


@dataclass
class Outcome:
    """What one scenario saw; `problems` is empty when every property held."""

    moment: str
    #: SIGKILL (or connection cut) -> the first interaction the new active instance answered
    takeover_s: float = math.nan
    images_posted: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def _shape(moment: str) -> Shape:
    # Mid-download needs a download long enough to be inside: every GET /view of the SDXL nodes waits.
    return Shape(slow_view_s=8.0) if moment == "mid-download" else Shape()


async def _start_pair(c: Cluster) -> tuple[Process, Process]:
    """Two instances started together: whichever takes the lock first is A (active), the other B (standby)."""
    first, second = await asyncio.gather(c.start_bot("1"), c.start_bot("2"))
    active = asyncio.ensure_future(first.wait_line(TOOK_LOCK, timeout=60))
    other = asyncio.ensure_future(second.wait_line(TOOK_LOCK, timeout=60))
    done, pending = await asyncio.wait({active, other}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    a, b = (first, second) if active in done else (second, first)
    a.name, b.name = "A", "B"
    await a.wait_line(CONNECTED, timeout=60)  # its commands are synced and its relay is up
    return a, b


async def _draft_and_vote(c: Cluster) -> tuple[int, object]:
    """A Draft Grid with two votes; returns the thread id and the first drafts gallery (posted by A)."""
    fake = c.fake
    alice, bob = fake.users[:2]
    await (await fake.run_slash(alice, "draft", {"prompt": "a lighthouse at dusk, failover"})).response()
    thread = await wait_thread(fake, timeout=60)
    pages = await wait_galleries(fake, thread.id, "drafts", math.ceil(c.shape.drafts / 10), timeout=STAGE_TIMEOUT_S)
    page = pages[0]
    for user, label in ((alice, "✓1"), (bob, "✓2")):
        await (await fake.click(user, page, custom_id(page, label))).response()
    await fake.wait_for(lambda: {"✓1 · 1", "✓2 · 1"} <= set(labels(page)), timeout=30)
    return thread.id, page


async def _finished_on_node(c: Cluster, bot: Process, after: int) -> bool:
    """True once a prompt `bot` submitted (its `after`-th onwards) has finished on its node but is not delivered."""
    nodes = {n["id"]: n for n in yaml.safe_load((c.config_dir / "gpus.yaml").read_text())["nodes"]}
    delivered = {m.group(1) for _, m in bot.find(DELIVERED)}
    async with httpx.AsyncClient(timeout=5) as http:
        for _, m in bot.find(SUBMITTED)[after:]:
            job, node, prompt = m.group(1), m.group(2), m.group(3)
            if job in delivered:
                continue
            n = nodes[node]
            r = await http.get(f"http://{n['host']}:{n['port']}/history/{prompt}")
            if r.status_code == 200 and prompt in r.json():
                return True
    return False


async def _wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Re-check a condition of another process (a remote state has no event to wait on) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _unfinished_jobs(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM generations WHERE status IN ('queued', 'submitted', 'running')",
            )
        )
    finally:
        await conn.close()


async def takeover(root: Path, database_url: str, moment: str, *, echo: Callable[[str], None] | None = None) -> Outcome:
    """Kill the active instance at `moment` of the refined stage; see the module docstring for what must hold."""
    out = Outcome(moment)
    async with running_cluster(root, database_url, _shape(moment), echo=echo) as c:
        fake = c.fake
        alice, bob, carol = fake.users[:3]
        a, b = await _start_pair(c)
        thread_id, drafts_page = await _draft_and_vote(c)
        refined = c.shape.refined
        submitted_before = len(a.find(SUBMITTED))
        delivered_before = len(a.find(DELIVERED))
        if moment == "mid-post":
            fake.hold_stage = "refined"
        await (await fake.click(alice, drafts_page, custom_id(drafts_page, "Continue"))).response()

        if moment == "before any image":
            await a.wait_line(SUBMITTED, count=submitted_before + 1, timeout=STAGE_TIMEOUT_S)
            if len(a.find(DELIVERED)) > delivered_before:
                out.notes.append("an image was delivered before the kill landed")
        elif moment == "mid-download":
            await _wait_until(
                lambda: _finished_on_node(c, a, submitted_before), STAGE_TIMEOUT_S, "a finished refined prompt"
            )
        elif moment == "mid-post":
            await asyncio.wait_for(fake.post_held.wait(), STAGE_TIMEOUT_S)
        elif moment == "after the last image":
            await a.wait_line(DELIVERED, count=delivered_before + refined, timeout=STAGE_TIMEOUT_S)
        elif moment == "during a vote":
            pages = await wait_galleries(fake, thread_id, "refined", 1, timeout=STAGE_TIMEOUT_S)
            # The click reaches A, which dies before it answers (the member would click again).
            await fake.click(carol, pages[0], custom_id(pages[0], "✓1"))
        else:
            raise ValueError(f"unknown moment {moment!r}")

        out.check(len(fake.identify_payloads) == 1, "the standby connected to the Discord gateway while standing by")
        t_kill = time.monotonic()
        os.kill(a.proc.pid, signal.SIGKILL)
        if moment == "mid-post":
            fake.hold_stage = None
            fake.release_posts.set()  # Discord had the post: it lands although its poster is gone

        out.takeover_s = (await c.answered_probe(timeout=60)) - t_kill
        t_b_lock = await b.wait_line(TOOK_LOCK, timeout=10)
        await a.stop()
        await b.wait_line(CONNECTED, timeout=30)

        # Every image of the refined stage, posted exactly once (checked again at the end: a late copy shows then).
        pages = await wait_galleries(fake, thread_id, "refined", math.ceil(refined / 10), timeout=STAGE_TIMEOUT_S)
        await fake.wait_for(lambda: sum(len(p.attachments) for p in pages) >= refined, timeout=30)

        # The buttons of galleries the dead instance posted are answered by the new one: the drafts' (a stage
        # that is over), and a vote on the refined gallery (posted by A when it got that far) counts.
        refined_page = galleries(fake, thread_id, "refined")[0]
        by_a = refined_page.created_at < t_kill
        out.notes.append(f"the refined gallery was posted by {'A (the killed instance)' if by_a else 'B'}")
        await (await fake.click(bob, refined_page, custom_id(refined_page, "✓2"))).response(timeout=30)
        try:
            await fake.wait_for(lambda: "✓2 · 1" in labels(refined_page), timeout=30)
        except TimeoutError:
            out.problems.append(
                f"a vote on the refined gallery (posted by {'A' if by_a else 'B'}) did not show on its buttons"
            )

        click = await fake.click(bob, drafts_page, custom_id(drafts_page, "✓3"))
        out.check((await click.response(timeout=30)).type == 6, "a drafts button was not answered as an update")
        names = [att.filename for p in galleries(fake, thread_id, "refined") for att in p.attachments]
        out.images_posted = len(names)
        out.check(len(names) == refined, f"refined images posted: {len(names)}, expected {refined}")
        out.check(len(set(names)) == len(names), f"an image was posted twice: {sorted(names)}")

        # No GPU had prompts from both: A submitted nothing after B took the lock, B nothing before.
        a_subs, b_subs = submissions(a), submissions(b)
        out.check(bool(a_subs), "A submitted no prompt before it was killed")
        out.check(all(t < t_b_lock for t, _ in a_subs), "A submitted a prompt after B took the lock")
        out.check(all(t > t_b_lock for t, _ in b_subs), "B submitted a prompt before it took the lock")
        shared = prompt_ids(a) & prompt_ids(b)
        out.check(not shared, f"prompts submitted by both: {shared}")

        left = await _unfinished_jobs(database_url)
        out.check(left == 0, f"{left} jobs left in a non-terminal state")
    return out


async def split_brain(root: Path, database_url: str, *, echo: Callable[[str], None] | None = None) -> Outcome:
    """Cut the active instance's lock connection on the server mid-stage: it stops before the standby acts."""
    out = Outcome("split brain")
    async with running_cluster(root, database_url, Shape(), echo=echo) as c:
        fake = c.fake
        a, b = await _start_pair(c)
        thread_id, drafts_page = await _draft_and_vote(c)
        submitted_before = len(a.find(SUBMITTED))
        await (await fake.click(fake.users[0], drafts_page, custom_id(drafts_page, "Continue"))).response()
        await a.wait_line(SUBMITTED, count=submitted_before + 1, timeout=STAGE_TIMEOUT_S)

        a_id = Cluster.instance_id(a)
        conn = await asyncpg.connect(database_url)
        try:
            backend = await conn.fetchval("SELECT backend_pid FROM vibes_instances WHERE id = $1", a_id)
            t_cut = time.monotonic()
            await conn.execute("SELECT pg_terminate_backend($1)", backend)
        finally:
            await conn.close()

        t_fenced = await a.wait_line(FENCED_LINE, timeout=30)
        t_b_active = await b.wait_line(ACTIVE, timeout=30)
        out.takeover_s = (await c.answered_probe(timeout=60)) - t_cut
        code = await a.stop()
        out.check(code == 75, f"the fenced instance exited with {code}, expected 75")
        out.check(t_fenced < t_b_active, "B acted before A had fenced itself")
        out.check(all(t < t_fenced for t, _ in submissions(a)), "A submitted a prompt after it was fenced")
        t_b_lock = b.find(TOOK_LOCK)[0][0]
        quiet = [w for w in fake.writes if t_fenced < w[0] < t_b_active]
        out.check(not quiet, f"Discord writes between A's fence and B acting: {quiet}")
        out.check(all(t > t_b_lock for t, _ in submissions(b)), "B submitted before it took the lock")

        pages = await wait_galleries(fake, thread_id, "refined", 1, timeout=STAGE_TIMEOUT_S)
        await fake.wait_for(lambda: sum(len(p.attachments) for p in pages) >= c.shape.refined, timeout=30)
        names = [att.filename for p in galleries(fake, thread_id, "refined") for att in p.attachments]
        out.images_posted = len(names)
        out.check(sorted(set(names)) == sorted(names) and len(names) == c.shape.refined, f"refined posts: {names}")
        left = await _unfinished_jobs(database_url)
        out.check(left == 0, f"{left} jobs left in a non-terminal state")
    return out
