"""
Issue 12: a server full of strangers, through the fake Discord and the real discord.py.

Every hostile action below is checked three ways: the REST payloads the fake received (nobody is pinged who was
not meant to be), what the member saw (an ephemeral refusal that says what and, for budgets, when), and that
nothing on disk or in the database grew beyond what the action is allowed to cost.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.custom_ids import ModalId, ModalKind
from bot.relay import THREAD
from orchestrator.config import LimitSettings
from tests.bot.helpers import (
    OLLAMA_CHANGES,
    OLLAMA_PROMPT,
    OLLAMA_VISION,
    bot_messages,
    custom_id,
    galleries,
    make_config,
    running_bot,
    start_ollama_for_feedback,
    wait_galleries,
    wait_thread,
)
from tests.fakes.discord_models import FakeMessage
from tests.fakes.fake_discord import FakeDiscord, FakeFile, InteractionHandle

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
    files = frozenset(
        str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("vibes.db")
    )
    with sqlite3.connect(f"file:{data_dir / 'vibes.db'}?mode=ro", uri=True) as conn:
        rows = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in DB_TABLES}
    return Snapshot(files, rows)


def ephemeral_texts(handle: InteractionHandle) -> list[str]:
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


@pytest.fixture(autouse=True)
def _nobody_pinged_unless_meant(fake_discord, request):
    """After every action of this module: the bot's messages notified nobody (but those a test marks as meant)."""
    yield
    marker = request.node.get_closest_marker("meant_pings")
    meant = frozenset(marker.args[0](fake_discord)) if marker else frozenset()
    assert_pings_only(fake_discord, meant)


# --------------------------------------------------------------------------- images members send


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size in its header and holds almost no data (a lie within a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real, complete grey PNG of side² pixels that compresses to a few dozen KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = (b"\0" + b"\x80" * side) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(raw, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def small_png() -> bytes:
    """A valid PNG of a few KB (noise does not compress, so cutting it leaves a damaged file)."""
    pixels = bytes((i * 7919 + (i >> 3) * 104729) % 251 for i in range(96 * 64 * 3))
    buf = io.BytesIO()
    Image.frombytes("RGB", (96, 64), pixels).save(buf, "PNG")
    return buf.getvalue()


def tiff_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, "TIFF")
    return buf.getvalue()


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (32, 32)).save(buf, "GIF")
    return buf.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 0 0 moveto 100 100 lineto stroke\nshowpage\n"


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
        return self.fake.users[0]

    @property
    def bob(self):
        return self.fake.users[1]

    @property
    def carol(self):
        return self.fake.users[2]

    def mentions(self) -> str:
        return MENTIONS.format(role=self.fake.bot_role_id, user=self.fake.users[3].id)

    async def session(self):
        return await self.bot.orch.session(self.session_id)

    async def say(self, user, text: str) -> None:
        await self.fake.say(user, self.thread_id, text)

    async def submit(self, user, kind: ModalKind, values: dict[str, str], channel_id: int | None = None):
        cid = str(ModalId(kind, self.session_id))
        return await self.fake.submit_modal(user, channel_id or self.thread_id, cid, values)

    def suggestions(self) -> list[FakeMessage]:
        return [
            m
            for m in bot_messages(self.fake, self.thread_id)
            if m.embeds and m.embeds[0].get("title") == "Suggested prompt"
        ]


async def open_arena(
    fake: FakeDiscord, bot: Any, data_dir: Path, *, private: bool = False, suggestion: bool = False, prompt: str = ""
) -> Arena:
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
    base = LimitSettings(feedback_cooldown_s=0.0, session_cooldown_s=0.0)
    return make_config(tmp_path, drafts=4, llm=llm, limits=replace(base, **limits))


# =========================================================================== 1. mentions and markdown echoed


async def test_mentions_and_masked_links_in_prompt_and_negative_ping_nobody(fake_discord, tmp_path):
    """/draft with @everyone, a role, a user and a masked link in prompt, `--no` and `negative`: nobody pinged."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        evil = f"{MENTIONS.format(role=fake.bot_role_id, user=fake.users[3].id)} {MASKED}"
        prompt = f"a fox {evil} --no {evil}"
        arena = await open_arena(fake, bot, tmp_path, prompt=prompt)
        header = fake.message(fake.thread(arena.thread_id).starter_message_id)
        negative = next(f["value"] for f in header.embeds[0]["fields"] if f["name"] == "Negative")
        assert "@\u200beveryone" in negative and not live_masked_link(negative)
        assert_pings_only(fake)


async def test_negative_option_with_mentions_pings_nobody(fake_discord, tmp_path):
    """The `negative` option with mentions and a masked link: shown defused, nobody pinged."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        evil = f"{MENTIONS.format(role=fake.bot_role_id, user=fake.users[3].id)} {MASKED}"
        await (await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox", "negative": evil})).response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 1)
        header = fake.message(thread.starter_message_id)
        negative = next(f["value"] for f in header.embeds[0]["fields"] if f["name"] == "Negative")
        assert not live_masked_link(negative)
        assert_pings_only(fake)
        await bot.relay.wait_retries()


async def test_feedback_with_mentions_pings_nobody(fake_discord, tmp_path):
    """A reply full of mentions and a masked link becomes a suggestion that pings nobody and links nowhere."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path)
        await arena.say(arena.bob, f"add {arena.mentions()} and {MASKED}, warmer light")
        await fake.wait_for(lambda: arena.suggestions(), timeout=15)
        embed = arena.suggestions()[0].embeds[0]
        for f in embed["fields"]:
            assert not live_masked_link(f["value"]), f
        assert_pings_only(fake)


async def test_edit_modal_and_undo_echo_mentions_without_pinging(fake_discord, tmp_path):
    """An Edit with mentions and a masked link is applied; the applied text and `undo` echo it defused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        evil = f"a fox {arena.mentions()} {MASKED}"
        h = await arena.submit(arena.alice, ModalKind.EDIT, {"prompt": evil, "negative": arena.mentions()})
        await h.response()
        assert (await arena.session()).prompt == " ".join(evil.split())
        applied = h.original
        assert applied is not None and "@\u200beveryone" in applied.content and not live_masked_link(applied.content)
        # One more applied prompt, so `undo` brings the hostile one back into a message.
        await arena.say(arena.alice, "more contrast")
        await fake.wait_for(lambda: len(arena.suggestions()) == 2, timeout=15)
        await (
            await fake.click(arena.alice, arena.suggestions()[1], custom_id(arena.suggestions()[1], "Use"))
        ).response()
        await arena.say(arena.alice, "undo")
        await fake.wait_for(lambda: any("Reverted" in m.content for m in bot_messages(fake, arena.thread_id)))
        undo = next(m for m in bot_messages(fake, arena.thread_id) if "Reverted" in m.content)
        assert "@\u200beveryone" in undo.content and not live_masked_link(undo.content)
        assert_pings_only(fake)


async def test_concept_values_with_mentions_ping_nobody(fake_discord, tmp_path):
    """Concept Builder: a subject, a typed value and a modal value with mentions; galleries repeat them defused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        evil = MENTIONS.format(role=fake.bot_role_id, user=fake.users[3].id)
        await (await fake.run_slash(fake.users[0], "concept", {"subject": f"a cat {evil} {MASKED}"})).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: any(m.all_components for m in bot_messages(fake, thread.id)), timeout=20)
        await fake.say(fake.users[1], thread.id, f"neon {evil} {MASKED}")
        await fake.wait_for(lambda: any("set the field" in m.content for m in bot_messages(fake, thread.id)))
        sid = await bot.orch.session_for_ref(THREAD, str(thread.id))
        h = await fake.submit_modal(fake.users[2], thread.id, str(ModalId(ModalKind.FIELD, sid)), {"value": evil})
        await h.response()
        await fake.wait_for(lambda: h.original is not None and not h.original.loading)
        for m in bot_messages(fake, thread.id):
            assert not live_masked_link(m.content)
        assert_pings_only(fake)
        await bot.relay.wait_retries()


@pytest.mark.meant_pings(lambda fake: {f"user:{fake.users[1].id}"})
async def test_invite_pings_only_the_invited_member(fake_discord, tmp_path):
    """`/session invite` is the one message meant to ping: the invited member, not the inviter, no roles."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        h = await fake.run_slash(arena.alice, "session invite", {"member": arena.bob}, channel_id=arena.thread_id)
        await h.response()
        assert_pings_only(fake, frozenset({f"user:{arena.bob.id}"}))
        assert f"user:{arena.bob.id}" in fake.bot_pings()


# =========================================================================== 2. forged interactions


FORGED_MODALS = [
    pytest.param(ModalKind.EDIT, {"prompt": "hijacked prompt", "negative": ""}, id="edit-from-main-channel"),
    pytest.param(ModalKind.FEEDBACK, {"feedback": "make it a horror scene"}, id="feedback-from-main-channel"),
    pytest.param(ModalKind.FIELD, {"value": "hijacked"}, id="field-from-main-channel"),
]


@pytest.mark.parametrize(("kind", "values"), FORGED_MODALS)
async def test_forged_modal_submit_from_another_channel_is_refused(fake_discord, tmp_path, kind, values):
    """A modal submit naming a session, sent from the main channel, changes nothing and is refused privately."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        h = await arena.submit(arena.bob, kind, values, channel_id=fake.channel_id)
        assert "another session's thread" in await refusal(fake, h)
        assert (await arena.session()).prompt == prompt
        assert len(arena.suggestions()) == 1
        assert await snap(bot, tmp_path) == before
        assert_pings_only(fake)


async def test_forged_edit_submit_from_another_sessions_thread_is_refused(fake_discord, tmp_path):
    """Bob's own thread is no key to alice's session: the Edit submit naming hers is refused there."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        await (await fake.run_slash(arena.bob, "draft", {"prompt": "bob's own"})).response()
        bobs = await wait_thread(fake, 2)
        await wait_galleries(fake, bobs.id, "drafts", 1)
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        h = await arena.submit(arena.bob, ModalKind.EDIT, {"prompt": "hijacked"}, channel_id=bobs.id)
        assert "another session's thread" in await refusal(fake, h)
        assert (await arena.session()).prompt == prompt
        assert await snap(bot, tmp_path) == before
        await bot.relay.wait_retries()


FORGED_CLICKS = [
    pytest.param("✓1", id="vote"),
    pytest.param("✗2", id="reject"),
    pytest.param("Continue", id="continue"),
    pytest.param("Regenerate", id="regenerate"),
    pytest.param("End", id="end"),
    pytest.param("Feedback", id="feedback-button"),
]


@pytest.mark.parametrize("label", FORGED_CLICKS)
async def test_forged_gallery_click_from_another_channel_is_refused(fake_discord, tmp_path, label):
    """A gallery button's custom_id sent from another channel is refused; no vote, stage or job is made."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path)
        before = await snap(bot, tmp_path)
        cid = custom_id(arena.gallery, label)
        h = await fake.click(arena.alice, arena.gallery, cid, channel_id=fake.other_channel_id)
        assert "another session's thread" in await refusal(fake, h)
        assert await snap(bot, tmp_path) == before
        assert (await arena.session()).state.value != "ended"


@pytest.mark.parametrize("label", ["Use", "Discard", "Edit"])
async def test_forged_suggestion_click_from_another_channel_is_refused(fake_discord, tmp_path, label):
    """Use / Discard / Edit from another channel: refused; the suggestion stays pending, the prompt unchanged."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        assert arena.suggestion is not None
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        cid = custom_id(arena.suggestion, label)
        h = await fake.click(arena.alice, arena.suggestion, cid, channel_id=fake.channel_id)
        assert "another session's thread" in await refusal(fake, h)
        session = await arena.session()
        assert session.prompt == prompt and session.suggestion is not None
        assert await snap(bot, tmp_path) == before


@pytest.mark.parametrize("after", ["nothing-pending", "discarded"])
async def test_edit_submit_needs_the_pending_suggestion(fake_discord, tmp_path, after):
    """An Edit submit in the right thread, with no suggestion pending (never made, or discarded): refused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=after == "discarded")
        if arena.suggestion is not None:
            await (await fake.click(arena.alice, arena.suggestion, custom_id(arena.suggestion, "Discard"))).response()
        before, prompt = await snap(bot, tmp_path), (await arena.session()).prompt
        h = await arena.submit(arena.alice, ModalKind.EDIT, {"prompt": "a new prompt out of nowhere"})
        assert "no pending suggestion" in await refusal(fake, h)
        assert (await arena.session()).prompt == prompt
        assert await snap(bot, tmp_path) == before


# =========================================================================== 3. a stranger in a private session


async def _stranger_click(arena: Arena, label: str, message: FakeMessage | None = None) -> str:
    msg = message or arena.gallery
    return await refusal(arena.fake, await arena.fake.click(arena.carol, msg, custom_id(msg, label)))


STRANGER_CLICKS = [
    pytest.param("✓1", "private session", id="vote"),
    pytest.param("✗1", "private session", id="reject"),
    pytest.param("Continue", "Only the owner can continue", id="continue"),
    pytest.param("Regenerate", "Only the owner", id="regenerate"),
    pytest.param("End", "Only the owner", id="end"),
    pytest.param("Feedback", "private session", id="feedback-button"),
]


@pytest.mark.parametrize(("label", "expected"), STRANGER_CLICKS)
async def test_stranger_in_private_session_gallery_buttons(fake_discord, tmp_path, label, expected):
    """Carol, not invited, presses each gallery button of alice's private session: refused, nothing changes."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        before = await snap(bot, tmp_path)
        assert expected in await _stranger_click(arena, label)
        assert await snap(bot, tmp_path) == before
        assert_pings_only(fake)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        pytest.param("Use", "Only the owner can apply a suggestion", id="use"),
        pytest.param("Edit", "Only the owner can apply a suggestion", id="edit"),
        pytest.param("Discard", "private session", id="discard"),
    ],
)
async def test_stranger_in_private_session_suggestion_buttons(fake_discord, tmp_path, label, expected):
    """Carol presses Use / Edit / Discard on alice's private suggestion: refused, it stays pending."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True, suggestion=True)
        before = await snap(bot, tmp_path)
        assert expected in await _stranger_click(arena, label, arena.suggestion)
        assert (await arena.session()).suggestion is not None
        assert await snap(bot, tmp_path) == before


@pytest.mark.meant_pings(lambda fake: {f"user:{fake.users[1].id}"})
async def test_invited_member_pressing_use_is_told_what_was_refused(fake_discord, tmp_path):
    """An invited member may vote but not apply: the refusal names applying a suggestion, not 'continue'."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True, suggestion=True)
        await (
            await fake.run_slash(arena.alice, "session invite", {"member": arena.bob}, channel_id=arena.thread_id)
        ).response()
        assert arena.suggestion is not None
        h = await fake.click(arena.bob, arena.suggestion, custom_id(arena.suggestion, "Use"))
        text = await refusal(fake, h)
        assert "apply a suggestion" in text and "vote" in text
        assert (await arena.session()).suggestion is not None


async def test_stranger_reply_in_private_session_is_ignored(fake_discord, tmp_path):
    """Carol's feedback reply in a private thread: no pipeline call, no suggestion, no answer at all."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        before, count = await snap(bot, tmp_path), len(bot_messages(fake, arena.thread_id))
        await arena.say(arena.carol, f"make it gory {arena.mentions()}")
        await arena.say(arena.alice, "warmer light")  # the owner's reply is handled after carol's
        await fake.wait_for(lambda: arena.suggestions(), timeout=15)
        assert len(bot_messages(fake, arena.thread_id)) == count + 1
        assert (await snap(bot, tmp_path)).rows == before.rows
        assert_pings_only(fake)


@pytest.mark.parametrize(
    ("command", "options", "expected"),
    [
        pytest.param("session invite", {"member": "carol"}, "Only the owner can invite", id="invite"),
        pytest.param("session end", {}, "Only the owner", id="end"),
        pytest.param("session open", {}, "Only the owner can change who may vote", id="open"),
        pytest.param("session rules", {"quorum": 1}, "Only the owner", id="rules"),
    ],
)
async def test_stranger_session_commands_are_refused(fake_discord, tmp_path, command, options, expected):
    """Carol's /session invite, end, open and rules in alice's private thread: refused privately, nothing changes."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, private=True)
        opts = {k: (arena.carol if v == "carol" else v) for k, v in options.items()}
        before = await snap(bot, tmp_path)
        h = await fake.run_slash(arena.carol, command, opts, channel_id=arena.thread_id)
        assert expected in await refusal(fake, h)
        assert (await snap(bot, tmp_path)).rows == before.rows
        assert (await arena.session()).visibility.value == "private"


# =========================================================================== 4. uploads


def upload_files(data_dir: Path) -> list[Path]:
    return [p for d in ("quarantine", "inputs", "images") for p in (data_dir / d).rglob("*") if p.is_file()]


# (file factory, what the refusal says, whether the bot had to download it to know)
UPLOADS = [
    pytest.param(lambda: FakeFile("cat.png", EPS, "image/png"), "looks like PostScript/EPS", True, id="eps-as-png"),
    pytest.param(lambda: FakeFile("cat.png", tiff_bytes(), "image/png"), "looks like TIFF", True, id="tiff-as-png"),
    pytest.param(lambda: FakeFile("cat.png", gif_bytes(), "image/png"), "looks like GIF", True, id="gif-as-png"),
    pytest.param(
        lambda: FakeFile("cat.png", png_header_only(20000, 20000), "image/png"),
        "400.0 megapixels",
        True,
        id="20k-square-in-a-few-bytes",
    ),
    pytest.param(
        lambda: FakeFile("cat.png", png_header_only(8000, 8000), "image/png"), "8000x8000", True, id="8k-square"
    ),
    pytest.param(lambda: FakeFile("cat.png", png_bomb(5000), "image/png"), "5000x5000", True, id="bomb-in-30-KB"),
    pytest.param(lambda: FakeFile("cat.png", small_png()[:300], "image/png"), "damaged", True, id="truncated"),
    pytest.param(lambda: FakeFile("cat.txt", b"hello", "text/plain"), "PNG, JPEG or WebP", False, id="text-type"),
    pytest.param(
        lambda: FakeFile("cat.png", small_png(), "image/png", declared_size=25 * 1024 * 1024),
        "the limit is 20 MB",
        False,
        id="declared-too-large",
    ),
    pytest.param(
        lambda: FakeFile("cat.png", small_png() + b"\0" * (21 * 1024 * 1024), "image/png", declared_size=1000),
        "the limit is 20 MB",
        True,
        id="lies-about-its-size",
    ),
]


@pytest.mark.parametrize(("upload", "expected", "downloaded"), UPLOADS)
async def test_bad_uploads_are_refused_for_what_they_are(fake_discord, tmp_path, upload, expected, downloaded):
    """Each bad file is refused with what is wrong with it (never a GPU's fault); nothing stays on disk or in the DB."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        before = await snap(bot, tmp_path)
        h = await fake.run_slash(fake.users[1], "explore", {"private": False}, attachments={"image": upload()})
        text = await refusal(fake, h)
        assert expected in text
        assert "GPU" not in text
        assert fake.threads == []
        assert upload_files(tmp_path) == []
        assert await snap(bot, tmp_path) == before
        assert fake.cdn_fetches == (1 if downloaded else 0), "refused before the download when the metadata says so"
        await bot.relay.wait_retries()


async def test_valid_upload_from_a_thread_is_refused_and_leaves_nothing(fake_discord, tmp_path):
    """A valid PNG sent from inside a thread: "start sessions in a server text channel", not downloaded, no copy."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path)
        before = await snap(bot, tmp_path)
        files = {"image": FakeFile("cat.png", small_png(), "image/png")}
        h = await fake.run_slash(arena.bob, "explore", {}, channel_id=arena.thread_id, attachments=files)
        assert "server text channel" in await refusal(fake, h)
        assert fake.cdn_fetches == 0
        assert await snap(bot, tmp_path) == before


async def test_uploads_at_the_session_limit_leave_nothing(fake_discord, tmp_path):
    """Three /explore uploads refused at the session limit leave no PNG, thumbnail or quarantine file behind."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path, max_active_sessions_per_user=1)) as bot:
        await open_arena(fake, bot, tmp_path)
        before = await snap(bot, tmp_path)
        for _ in range(3):
            files = {"image": FakeFile("cat.png", small_png(), "image/png")}
            h = await fake.run_slash(fake.users[0], "explore", {}, attachments=files)
            assert "active sessions" in await refusal(fake, h)
        assert await snap(bot, tmp_path) == before
        assert len(fake.threads) == 1


async def test_accepted_upload_is_kept_once_and_counts_against_the_quota(fake_discord, tmp_path):
    """An accepted upload is one file in the member's inputs (no store copy); the next one over the quota is refused."""
    fake = fake_discord
    picture = small_png()
    async with running_bot(fake, config_for(tmp_path, upload_quota_bytes=len(picture) + 100)) as bot:
        files = {"image": FakeFile("cat.png", picture, "image/png")}
        await (await fake.run_slash(fake.users[1], "explore", {}, attachments=files)).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: galleries(fake, thread.id, "round 1"), timeout=20)
        kept = [p for p in upload_files(tmp_path) if "inputs" in p.parts]
        assert len(kept) == 1 and kept[0].parent.name == str(fake.users[1].id)
        assert not (tmp_path / "quarantine").exists() or not list((tmp_path / "quarantine").iterdir())
        before = await snap(bot, tmp_path)
        h = await fake.run_slash(
            fake.users[1], "explore", {}, attachments={"image": FakeFile("b.png", picture, "image/png")}
        )
        assert "each member may keep" in await refusal(fake, h)
        assert fake.cdn_fetches == 1, "the second upload was refused by its declared size, before the download"
        assert await snap(bot, tmp_path) == before
        await bot.relay.wait_retries()


# =========================================================================== 5. floods and budgets


async def test_a_flood_of_replies_makes_one_suggestion_and_one_notice(fake_discord, tmp_path):
    """15 replies by one member: one pipeline run (at most 3 model chats, not 30) and one suggestion, one short
    notice that says when; no pile-up."""
    fake = fake_discord
    ollama, llm = await start_ollama_for_feedback()
    try:
        async with running_bot(fake, config_for(tmp_path, llm=llm, feedback_cooldown_s=600.0)) as bot:
            arena = await open_arena(fake, bot, tmp_path)
            before = await snap(bot, tmp_path)
            for i in range(15):
                await arena.say(arena.bob, f"more drama {i} @everyone")
            await fake.wait_for(lambda: arena.suggestions(), timeout=15)
            notices = lambda: [m for m in bot_messages(fake, arena.thread_id) if "you can give more" in m.content]  # noqa: E731
            await fake.wait_for(notices, timeout=15)
            assert len(arena.suggestions()) == 1
            assert 1 <= len(ollama.chats()) <= 3, "one refine: interpreter, vision, engineer at most"
            assert len(notices()) == 1 and "in 10 min" in notices()[0].content
            assert (await snap(bot, tmp_path)).files == before.files
    finally:
        await ollama.stop()


async def test_a_flood_of_starts_makes_one_session(fake_discord, tmp_path):
    """Five /draft in a row by one member: one session; the others are refused privately with when to try again."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path, session_cooldown_s=600.0)) as bot:
        first = await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox"})
        await first.response()
        thread = await wait_thread(fake)
        await wait_galleries(fake, thread.id, "drafts", 1)
        before = await snap(bot, tmp_path)
        for _ in range(4):
            h = await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox @everyone"})
            text = await refusal(fake, h)
            assert "you can start another in 10 min" in text
        assert len(fake.threads) == 1
        assert await snap(bot, tmp_path) == before
        # Another member is not held back by bob's cooldown.
        await (await fake.run_slash(fake.users[2], "draft", {"prompt": "a cat"})).response()
        await wait_thread(fake, 2)
        assert_pings_only(fake)
        await bot.relay.wait_retries()


async def test_a_typo_does_not_cost_the_start_cooldown(fake_discord, tmp_path):
    """A start refused for a bad flag gives the cooldown back: the corrected command works at once."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path, session_cooldown_s=600.0)) as bot:
        h = await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox --ar 99:1"})
        assert "--ar" in await refusal(fake, h)
        await (await fake.run_slash(fake.users[1], "draft", {"prompt": "a fox --ar 16:9"})).response()
        await wait_thread(fake)
        await bot.relay.wait_retries()


async def test_votes_stay_instant_under_cooldowns(fake_discord, tmp_path):
    """Budgets never slow votes: six toggles in a row under long cooldowns are all taken."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path, feedback_cooldown_s=600.0, session_cooldown_s=600.0)) as bot:
        arena = await open_arena(fake, bot, tmp_path)
        page = arena.gallery
        for i in range(6):
            shown = "✓1 · 1" if i % 2 == 0 else "✓1"
            await (await fake.click(arena.bob, page, custom_id(page, "✓1"))).response()
            await fake.wait_for(lambda shown=shown: shown in [c.label for c in page.all_components])
        stage = await bot.orch.current_stage(arena.session_id)
        assert stage.image(1).votes == {}, "an even number of presses withdraws the vote"


@dataclass
class GatedOllama:
    """A fake Ollama whose answers wait until the test lets them through."""

    server: Any
    settings: Any
    gate: asyncio.Event
    arrived: asyncio.Event


async def gated_ollama() -> GatedOllama:
    from orchestrator.config import LlmSettings
    from tests.fakes.fake_ollama import FakeOllama, Reply

    llm = LlmSettings()
    gate, arrived = asyncio.Event(), asyncio.Event()

    async def answer(body: dict[str, Any]) -> Any:
        arrived.set()
        await gate.wait()
        model = body.get("model")
        if model == llm.interpreter_model:
            return Reply.json(OLLAMA_CHANGES)
        if model == llm.vision_model:
            return Reply.json(OLLAMA_VISION)
        return Reply.json(OLLAMA_PROMPT)

    server = FakeOllama(handler=answer)
    await server.start()
    return GatedOllama(server, replace(llm, enabled=True, host=server.url, timeout_s=10), gate, arrived)


async def test_second_feedback_while_one_runs_is_refused_and_queued_refines_wait_by_edit(fake_discord, tmp_path):
    """One refine per session (a second member's feedback is refused privately, saying when); one for the whole bot:
    a refine in another session says "waiting for the model…" once and that same message becomes its suggestion."""
    fake = fake_discord
    ollama = await gated_ollama()
    try:
        async with running_bot(fake, config_for(tmp_path, llm=ollama.settings)) as bot:
            arena = await open_arena(fake, bot, tmp_path)
            await (await fake.run_slash(fake.users[2], "draft", {"prompt": "carol's own"})).response()
            other = await wait_thread(fake, 2)
            other_gallery = (await wait_galleries(fake, other.id, "drafts", 1))[0]

            await arena.say(arena.bob, "warmer light")
            await ollama.arrived.wait()
            # A second member's feedback for the same session, through the Feedback modal: refused privately.
            h = await arena.submit(arena.carol, ModalKind.FEEDBACK, {"feedback": "colder light"})
            assert "already being worked on" in await refusal(fake, h)

            # Feedback in carol's session waits for the model: one message says so.
            fb = await fake.click(fake.users[2], other_gallery, custom_id(other_gallery, "Feedback"))
            await fb.response()
            sub = await fake.submit_modal(
                fake.users[2],
                other.id,
                str(ModalId(ModalKind.FEEDBACK, await bot.orch.session_for_ref(THREAD, str(other.id)))),
                {"feedback": "more fog"},
                opened_by=fb,
            )
            waiting = lambda: [m for m in bot_messages(fake, other.id) if "waiting for the model" in m.content]  # noqa: E731
            await fake.wait_for(waiting, timeout=15)
            (note,) = waiting()
            ollama.gate.set()
            await fake.wait_for(lambda: note.embeds and note.embeds[0].get("title") == "Suggested prompt", timeout=15)
            await sub.response()
            assert not waiting(), "the waiting message became the suggestion (an edit, not a new message)"
            await fake.wait_for(lambda: arena.suggestions(), timeout=15)
            assert len(arena.suggestions()) == 1
            assert_pings_only(fake)
            await bot.relay.wait_retries()
    finally:
        await ollama.server.stop()


# =========================================================================== 6. lengths


NEGATIVE = ", ".join(f"ugly thing {i}" for i in range(60))  # ~770 characters


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"prompt": f"a fox --no {NEGATIVE}"}, id="no-flag"),
        pytest.param({"prompt": "a fox", "negative": NEGATIVE}, id="negative-option"),
    ],
)
async def test_long_negative_prompts_are_refused(fake_discord, tmp_path, options):
    """A negative prompt over the limit, by `--no` or the option: refused with the numbers, nothing created."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        before = await snap(bot, tmp_path)
        text = await refusal(fake, await fake.run_slash(fake.users[1], "draft", options))
        assert f"{len(NEGATIVE)} characters; the limit is 500" in text
        assert await snap(bot, tmp_path) == before and fake.threads == []
        await bot.relay.wait_retries()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({"prompt": "a fox", "negative": NEGATIVE}, "the limit is 500", id="edit-negative"),
        pytest.param({"prompt": "a fox " * 400, "negative": ""}, "over 1500 characters", id="edit-prompt"),
    ],
)
async def test_edit_modal_lengths_are_enforced(fake_discord, tmp_path, values, expected):
    """An Edit submit with a prompt or negative over the limit (a client can skip Discord's max_length): refused."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        before, session = await snap(bot, tmp_path), await arena.session()
        h = await arena.submit(arena.alice, ModalKind.EDIT, values)
        assert expected in await refusal(fake, h)
        after = await arena.session()
        assert (after.prompt, after.negative_prompt) == (session.prompt, session.negative_prompt)
        assert after.suggestion is not None
        assert await snap(bot, tmp_path) == before


async def test_edit_modal_offers_our_limits(fake_discord, tmp_path):
    """The Edit modal's inputs carry our own prompt limits, so Discord refuses an over-long value itself."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        arena = await open_arena(fake, bot, tmp_path, suggestion=True)
        assert arena.suggestion is not None
        h = await fake.click(arena.alice, arena.suggestion, custom_id(arena.suggestion, "Edit"))
        await h.response()
        assert h.modal is not None
        inputs = {}
        for row in h.modal["components"]:
            inner = row.get("component") or row["components"][0]
            inputs[inner["custom_id"]] = inner["max_length"]
        assert inputs == {"prompt": 1500, "negative": 500}


# =========================================================================== 7. upscales that would make nothing new


async def test_second_upscale_of_an_image_links_the_first(fake_discord, tmp_path):
    """Upscale 1 twice in an Explorer round: one upscale stage; the second press links it privately."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        await (await fake.run_slash(fake.users[0], "explore", {"prompt": "a harbour"})).response()
        thread = await wait_thread(fake)
        page = (await fake.wait_for(lambda: galleries(fake, thread.id, "round 1"), timeout=20))[0]
        await (await fake.click(fake.users[0], page, custom_id(page, "Upscale 1"))).response()
        upscaled = lambda: [m for m in bot_messages(fake, thread.id) if m.content.startswith("**Upscaled**")]  # noqa: E731
        await fake.wait_for(upscaled, timeout=20)
        before = await snap(bot, tmp_path)
        h = await fake.click(fake.users[1], page, custom_id(page, "Upscale 1"))
        text = await refusal(fake, h)
        assert "already upscaled" in text and f"/{thread.id}/{upscaled()[0].id}" in text
        assert await snap(bot, tmp_path) == before
        assert len(upscaled()) == 1


async def test_final_with_automatic_upscale_offers_no_upscale_button(fake_discord, tmp_path):
    """With funnel.final_upscale the final's 4x copy comes by itself: its message offers no Upscale 4x."""
    fake = fake_discord
    config = make_config(tmp_path, drafts=2, final_upscale=True, limits=LimitSettings(session_cooldown_s=0.0))
    async with running_bot(fake, config) as bot:
        alice = fake.users[0]
        await (await fake.run_slash(alice, "draft", {"prompt": "a castle"})).response()
        thread = await wait_thread(fake)
        for stage in ("drafts", "refined", "polished"):
            page = (await wait_galleries(fake, thread.id, stage, 1))[0]
            await (await fake.click(alice, page, custom_id(page, "✓1"))).response()
            await fake.wait_for(lambda page=page: "✓1 · 1" in [c.label for c in page.all_components])
            await (await fake.click(alice, page, custom_id(page, "Continue"))).response()
        finals = lambda: [  # noqa: E731
            m for m in bot_messages(fake, thread.id) if m.content.startswith(("**Final image**", "**Upscaled**"))
        ]
        await fake.wait_for(lambda: len(finals()) == 2, timeout=30)
        for message in finals():
            assert [b.label for b in message.buttons] == ["Variations", "Branch from here", "Info"]
        await bot.relay.settled()


STRANGER_EXPLORER = [
    pytest.param("round", "Pick 1", "Only the owner", id="pick"),
    pytest.param("round", "Upscale 2", "Only the owner", id="upscale"),
    pytest.param("round", "Regenerate", "Only the owner", id="regenerate"),
    pytest.param("upscaled", "Variations", "private session", id="variations"),
    pytest.param("upscaled", "Branch from here", "private session", id="branch"),
]


@pytest.mark.parametrize(("where", "label", "expected"), STRANGER_EXPLORER)
async def test_stranger_in_private_explorer(fake_discord, tmp_path, where, label, expected):
    """Carol in alice's private Explorer: Pick, Upscale, Regenerate, and Variations / Branch on its upscale."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        alice, carol = fake.users[0], fake.users[2]
        await (await fake.run_slash(alice, "explore", {"prompt": "a harbour", "private": True})).response()
        thread = await wait_thread(fake)
        page = (await fake.wait_for(lambda: galleries(fake, thread.id, "round 1"), timeout=20))[0]
        target = page
        if where == "upscaled":
            await (await fake.click(alice, page, custom_id(page, "Upscale 1"))).response()
            done = lambda: [m for m in bot_messages(fake, thread.id) if m.content.startswith("**Upscaled**")]  # noqa: E731
            await fake.wait_for(done, timeout=20)
            target = done()[0]
        before = await snap(bot, tmp_path)
        text = await refusal(fake, await fake.click(carol, target, custom_id(target, label)))
        assert expected in text
        assert await snap(bot, tmp_path) == before
        assert len(fake.threads) == 1


async def test_stranger_in_private_concept_cannot_type_a_value(fake_discord, tmp_path):
    """Carol presses "Type a value" in alice's private Concept Builder: refused before any form opens."""
    fake = fake_discord
    async with running_bot(fake, config_for(tmp_path)) as bot:
        await (await fake.run_slash(fake.users[0], "concept", {"subject": "a cat", "private": True})).response()
        thread = await wait_thread(fake)
        await fake.wait_for(lambda: any("Type a value" in labels for labels in _labels(fake, thread.id)), timeout=20)
        page = next(m for m in bot_messages(fake, thread.id) if "Type a value ✎" in [b.label for b in m.buttons])
        before = await snap(bot, tmp_path)
        h = await fake.click(fake.users[2], page, custom_id(page, "Type a value"))
        assert "private session" in await refusal(fake, h)
        assert h.modal is None
        assert await snap(bot, tmp_path) == before


def _labels(fake: FakeDiscord, thread_id: int) -> list[str]:
    return [" ".join(b.label or "" for b in m.buttons) for m in bot_messages(fake, thread_id)]
