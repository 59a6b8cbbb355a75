"""Uploads members send: refused for what they are, leaving nothing behind; a kept one counts against the quota."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.bot.helpers import galleries, running_bot, wait_thread
from tests.bot.hostile.arena import config_for, open_arena, refusal, snap
from tests.fakes.fake_discord import FakeFile


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
