"""
The arena of the hostile-member tests: a running bot with one session, and what to look at after an action.

A snapshot of the data directory and the database rows, the member's ephemeral refusal, the pings the bot made.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.custom_ids import ModalId, ModalKind
from bot.relay import THREAD
from orchestrator.config import LimitSettings
from tests.bot.helpers import bot_messages, make_config, wait_galleries, wait_thread
from tests.fakes.discord_models import FakeMessage
from tests.fakes.fake_discord import FakeDiscord, InteractionHandle

MENTIONS = "@everyone @here <@&{role}> <@{user}>"
MASKED = "[free nitro](https://evil.example/steal)"
DB_TABLES = ("sessions", "stages", "generations", "votes", "participants", "intent", "refs")


# --------------------------------------------------------------------------- what to look at


@dataclass(frozen=True)
class Snapshot:
    """Files under the data directory (the database aside) and row counts of every table."""

    files: frozenset[str]
    rows: dict[str, int]


async def snap(bot: Any, data_dir: Path) -> Snapshot:
    """A snapshot once the bot has handled every event so far (so the relay's own writes are not counted)."""
    await bot.relay.settled()
    return snapshot(data_dir)


def snapshot(data_dir: Path) -> Snapshot:
    """The files and the row counts as they are now (read-only: the bot's connection is not disturbed)."""
    files = frozenset(
        str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("vibes.db")
    )
    with sqlite3.connect(f"file:{data_dir / 'vibes.db'}?mode=ro", uri=True) as conn:
        rows = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in DB_TABLES}
    return Snapshot(files, rows)


def ephemeral_texts(handle: InteractionHandle) -> list[str]:
    """The texts only the member saw: ephemeral follow-ups and an ephemeral interaction response."""
    texts = [m.content for m in handle.messages if m.ephemeral and m.content and not m.loading]
    if handle.callback is not None and handle.callback.ephemeral and handle.callback.data.get("content"):
        texts.append(handle.callback.data["content"])
    return texts


async def refusal(fake: FakeDiscord, handle: InteractionHandle) -> str:
    """The ephemeral text the member got (and nothing public from this interaction)."""
    await handle.response(15)
    await fake.wait_for(lambda: ephemeral_texts(handle), timeout=15)
    public = [m for m in handle.messages if not m.ephemeral and not m.deleted and m.content]
    assert not public, f"a refusal must be private: {[m.content for m in public]}"
    return ephemeral_texts(handle)[0]


def live_masked_link(text: str) -> bool:
    """Whether `text` holds a masked link Discord would render (not escaped with a backslash)."""
    i = text.find("[free nitro](")
    return i >= 0 and (i == 0 or text[i - 1] != "\\")


def assert_pings_only(fake: FakeDiscord, allowed: frozenset[str] = frozenset()) -> None:
    """Every message the bot made (creates, edits, interaction replies) notified at most `allowed`."""
    pinged = fake.bot_pings()
    assert pinged <= allowed, f"the bot pinged {pinged - allowed}"


# --------------------------------------------------------------------------- the arena


@dataclass
class Arena:
    """A running bot with one session of alice's (its drafts delivered) and, if asked, a pending suggestion."""

    fake: FakeDiscord
    bot: Any
    data_dir: Path
    thread_id: int
    session_id: str
    gallery: FakeMessage
    suggestion: FakeMessage | None

    @property
    def alice(self):
        """The session's owner."""
        return self.fake.users[0]

    @property
    def bob(self):
        """A second member of the server (some tests invite him)."""
        return self.fake.users[1]

    @property
    def carol(self):
        """A third member: the stranger of the private-session tests."""
        return self.fake.users[2]

    def mentions(self) -> str:
        """@everyone, @here, the bot's role and a fourth member, as a member would type them."""
        return MENTIONS.format(role=self.fake.bot_role_id, user=self.fake.users[3].id)

    async def session(self):
        """The session as the orchestrator has it now."""
        return await self.bot.orch.session(self.session_id)

    async def say(self, user, text: str) -> None:
        """`user` posts `text` in the session's thread."""
        await self.fake.say(user, self.thread_id, text)

    async def submit(self, user, kind: ModalKind, values: dict[str, str], channel_id: int | None = None):
        """`user` submits the session's modal of this kind, from the thread unless another channel is claimed."""
        cid = str(ModalId(kind, self.session_id))
        return await self.fake.submit_modal(user, channel_id or self.thread_id, cid, values)

    def suggestions(self) -> list[FakeMessage]:
        """The bot's "Suggested prompt" messages in the thread, oldest first."""
        return [
            m
            for m in bot_messages(self.fake, self.thread_id)
            if m.embeds and m.embeds[0].get("title") == "Suggested prompt"
        ]


async def open_arena(
    fake: FakeDiscord, bot: Any, data_dir: Path, *, private: bool = False, suggestion: bool = False, prompt: str = ""
) -> Arena:
    """Alice starts a /draft (private if asked) and its drafts arrive; with `suggestion`, her feedback is pending."""
    alice = fake.users[0]
    h = await fake.run_slash(alice, "draft", {"prompt": prompt or "a lighthouse at dusk", "private": private})
    await h.response()
    thread = await wait_thread(fake)
    gallery = (await wait_galleries(fake, thread.id, "drafts", 1))[0]
    sid = await bot.orch.session_for_ref(THREAD, str(thread.id))
    arena = Arena(fake, bot, data_dir, thread.id, sid, gallery, None)
    if suggestion:
        await fake.say(alice, thread.id, "warmer light, no people")
        await fake.wait_for(lambda: arena.suggestions(), timeout=15)
        arena.suggestion = arena.suggestions()[0]
    await bot.relay.settled()
    return arena


def config_for(tmp_path: Path, llm: Any = None, **limits: Any) -> Any:
    """A four-draft config without cooldowns, but for the limits a test sets."""
    base = LimitSettings(feedback_cooldown_s=0.0, session_cooldown_s=0.0)
    return make_config(tmp_path, drafts=4, llm=llm, limits=replace(base, **limits))
