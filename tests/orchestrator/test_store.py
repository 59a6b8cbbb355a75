"""ImageStore: safe paths, image checks before decoding, conversion, thumbnails, contact sheets, JPEG copies, prune."""

from __future__ import annotations

import asyncio
import io
import os
import random
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from orchestrator.errors import LocalStoreError, StoreError
from orchestrator.store import ImageStore, StoredImage, safe_name


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data" / "images")


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(w: int, h: int, colour=(200, 120, 40), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (w, h), colour)


def noise(w: int, h: int, seed: int = 1) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (w, h), bytes(rng.getrandbits(8) for _ in range(w * h * 3)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims this size, followed by a tiny bogus IDAT: valid header, no real pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_save_png_writes_image_and_thumbnail_under_batch_dir(store):
    data = encode(solid(640, 320))
    stored = await store.save(None, "job-1", data)
    assert stored == StoredImage(
        path=store.images_dir / "_batch" / "job-1.png",
        thumbnail=store.images_dir / "_batch" / "job-1_thumb.jpg",
        width=640,
        height=320,
    )
    assert stored.path.read_bytes() == data, "a PNG from the node is kept byte for byte"
    with Image.open(stored.thumbnail) as t:
        assert t.format == "JPEG" and t.size == (256, 128)


async def test_save_uses_the_session_folder(store):
    stored = await store.save("sess_42", "img_7", encode(solid(64, 64)))
    assert stored.path == store.images_dir / "sess_42" / "img_7.png"
    assert store.path_for("sess_42", "img_7") == stored.path


async def test_small_image_thumbnail_is_not_upscaled(store):
    stored = await store.save(None, "small", encode(solid(100, 50)))
    with Image.open(stored.thumbnail) as t:
        assert t.size == (100, 50)


async def test_custom_thumbnail_size(tmp_path):
    store = ImageStore(tmp_path / "images", thumb_size=64)
    stored = await store.save(None, "a", encode(solid(300, 600)))
    with Image.open(stored.thumbnail) as t:
        assert max(t.size) == 64 and t.size == (32, 64)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF"])
async def test_non_png_input_is_converted_to_png(store, fmt):
    stored = await store.save(None, f"conv-{fmt.lower()}", encode(solid(120, 80), fmt))
    with Image.open(stored.path) as im:
        assert im.format == "PNG" and im.size == (120, 80)
    assert (stored.width, stored.height) == (120, 80)


async def test_rgba_png_gets_a_jpeg_thumbnail(store):
    stored = await store.save(None, "alpha", encode(solid(64, 64, (10, 20, 30, 0), mode="RGBA")))
    with Image.open(stored.thumbnail) as t:
        assert t.mode == "RGB" and t.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)


@pytest.mark.parametrize(
    "bad_id",
    [
        "../x",
        "..",
        ".",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "a\x00b",
        "x.png",
        "",
        "x" * 65,
        "\uff0e\uff0e\uff0fx",  # fullwidth "../x"
        "a\u2215b",  # division slash
        "caf\u00e9",
        "\u0430dmin",  # Cyrillic a
        "a b",
        "a\nb",
    ],
)
async def test_unsafe_image_and_session_ids_are_rejected_and_nothing_is_written(tmp_path, store, bad_id):
    data = encode(solid(8, 8))
    with pytest.raises(StoreError, match="unsafe"):
        await store.save(None, bad_id, data)
    with pytest.raises(StoreError, match="unsafe"):
        await store.save(bad_id, "ok", data)
    with pytest.raises(StoreError, match="unsafe"):
        store.path_for(bad_id, "ok")
    assert all_files(tmp_path) == []


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"\x89PNG\r\n\x1a\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>", os.urandom(4096)],
    ids=["empty", "text", "png-signature-only", "svg", "random"],
)
async def test_bytes_that_are_not_an_image_are_refused(tmp_path, store, data):
    with pytest.raises(StoreError, match="not an image"):
        await store.save(None, "bad", data)
    assert all_files(tmp_path) == []


async def test_truncated_png_is_refused(store):
    data = encode(noise(64, 64))
    with pytest.raises(StoreError, match="not an image"):
        await store.save(None, "cut", data[: len(data) // 2])


async def test_decompression_bomb_header_is_refused_without_decoding(tmp_path, store, monkeypatch):
    decoded = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(StoreError, match="too large"):
        await store.save(None, "bomb", png_header_only(100_000, 100_000))
    assert decoded == []
    assert all_files(tmp_path) == []


async def test_image_over_the_configured_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    store = ImageStore(tmp_path / "images", max_pixels=100 * 100)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    with pytest.raises(StoreError, match=r"101x100 is over 10000 pixels"):
        await store.save(None, "big", encode(solid(101, 100)))
    assert decoded == []
    await store.save(None, "fits", encode(solid(100, 100)))


async def test_writes_are_atomic_and_leave_no_temp_files(store):
    for i in range(3):
        await store.save("s1", f"img{i}", encode(solid(32, 32, (i * 40, 0, 0))))
    await store.save("s1", "img0", encode(solid(48, 48)))  # overwrite in place
    names = sorted(p.name for p in (store.images_dir / "s1").iterdir())
    assert names == [f"img{i}{s}" for i in range(3) for s in (".png", "_thumb.jpg")]
    with Image.open(store.images_dir / "s1" / "img0.png") as im:
        assert im.size == (48, 48)


async def test_failed_replace_keeps_the_old_file_and_removes_the_temp(store, monkeypatch):
    await store.save(None, "keep", encode(solid(32, 32)))
    old = (store.images_dir / "_batch" / "keep.png").read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    # Our own disk's failure, told apart from a node sending bad bytes (StoreError) so no GPU is blamed for it.
    with pytest.raises(LocalStoreError, match="No space"):
        await store.save(None, "keep", encode(solid(64, 64)))
    assert (store.images_dir / "_batch" / "keep.png").read_bytes() == old
    assert not [p for p in (store.images_dir / "_batch").iterdir() if p.name.startswith(".tmp-")]


async def test_a_disk_that_fills_on_the_thumbnail_leaves_no_image_behind(store, monkeypatch):
    """The thumbnail cannot be written: no PNG is left that no job row would name, and no temp file."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".jpg"):
            f.close()
            raise OSError(28, "No space left on device")
        return f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(LocalStoreError, match="No space"):
        await store.save("s1", "lost", encode(solid(64, 64)))
    left = [p.name for p in store.images_dir.rglob("*") if p.is_file()]
    assert left == []


def test_safe_name_strips_paths_and_hostile_characters():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..\\..\\windows\\x.png") == "x.png"
    assert safe_name("/abs/vibes_00001_.png") == "vibes_00001_.png"
    assert safe_name("a\x00b.png") == "a_b.png"
    assert safe_name("..") == "image"
    assert safe_name("") == "image"
    assert safe_name("\uff0e\uff0e\uff0fsecret.png") == "secret.png"
    assert safe_name("x" * 500).startswith("x") and len(safe_name("x" * 500)) == 100
    for hostile in ["..", "....//....//x", ".hidden", "con:nul", "a b\tc", "\u202egnp.exe", "\ud800.png"]:
        name = ImageStore.safe_name(hostile)
        assert name and not name.startswith(".") and ".." not in name
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


async def test_contact_sheet_dimensions_follow_count_cell_and_columns(store):
    paths = [(await store.save("cs", f"i{i}", encode(solid(90, 60, (40 * i, 80, 200))))).path for i in range(5)]
    out = await store.contact_sheet(paths, store.images_dir / "cs" / "sheet.png", cell=64)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (3 * 64, 2 * 64)  # ceil(sqrt(5)) columns
    out = await store.contact_sheet(paths, store.images_dir / "cs" / "row.jpg", cell=50, columns=5)
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (250, 50)
    out = await store.contact_sheet(paths, store.images_dir / "cs" / "col.png", cell=40, columns=1)
    with Image.open(out) as im:
        assert im.size == (40, 200)


async def test_contact_sheet_numbers_every_cell_and_draws_labels(store):
    colour = (30, 160, 60)
    paths = [(await store.save("cs", f"n{i}", encode(solid(128, 128, colour)))).path for i in range(3)]
    out = await store.contact_sheet(
        paths, store.images_dir / "cs" / "numbered.png", labels=["first", "", "third"], cell=128, columns=3
    )
    with Image.open(out) as sheet:
        sheet = sheet.convert("RGB")

        def colours(box):
            return {c for _, c in sheet.crop(box).getcolors(maxcolors=1 << 16)}

        for i in range(3):
            x = i * 128
            corner = colours((x, 0, x + 40, 30))
            assert (0, 0, 0) in corner and any(min(c) > 200 for c in corner), f"cell {i + 1} has no number"
            assert colour in colours((x + 50, 50, x + 80, 80)), "the image itself fills the cell"
            bottom = colours((x, 108, x + 128, 128))
            assert ((0, 0, 0) in bottom) == (i != 1), f"label strip of cell {i + 1}"


async def test_contact_sheet_refuses_bad_requests(tmp_path, store):
    p = (await store.save(None, "one", encode(solid(16, 16)))).path
    with pytest.raises(StoreError, match="labels"):
        await store.contact_sheet([p], store.images_dir / "s.png", labels=["a", "b"])
    with pytest.raises(StoreError, match="at least one"):
        await store.contact_sheet([], store.images_dir / "s.png")
    with pytest.raises(StoreError, match="outside"):
        await store.contact_sheet([p], tmp_path / "elsewhere.png")
    with pytest.raises(StoreError, match="outside"):
        await store.contact_sheet([p], store.images_dir / ".." / "escape.png")
    assert not (tmp_path / "elsewhere.png").exists() and not (tmp_path / "data" / "escape.png").exists()


async def test_jpeg_copy_respects_max_side(store):
    p = (await store.save(None, "big", encode(solid(800, 400)))).path
    data = await store.jpeg(p, max_side=200)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (200, 100)


async def test_jpeg_copy_shrinks_until_under_max_bytes(store):
    p = (await store.save(None, "noisy", encode(noise(384, 384)))).path
    unlimited = await store.jpeg(p, max_side=384, quality=95)
    limit = len(unlimited) // 6
    data = await store.jpeg(p, max_side=384, quality=95, max_bytes=limit)
    assert len(data) <= limit
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and max(im.size) <= 384


async def test_jpeg_copy_that_can_never_fit_raises(store):
    p = (await store.save(None, "noisy2", encode(noise(64, 64)))).path
    with pytest.raises(StoreError, match="cannot fit"):
        await store.jpeg(p, max_side=64, max_bytes=10)


async def test_prune_deletes_full_size_files_inside_and_keeps_thumbnails(store):
    a = await store.save("s", "a", encode(solid(16, 16)))
    b = await store.save("s", "b", encode(solid(16, 16)))
    assert await store.prune([a.path, a.thumbnail, b.path, b.path]) == 2
    assert not a.path.exists() and not b.path.exists()
    assert a.thumbnail.exists() and b.thumbnail.exists()


async def test_prune_never_deletes_outside_the_store(tmp_path, store):
    inside = await store.save("s", "x", encode(solid(16, 16)))
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"keep me")
    link_target = tmp_path / "target.png"
    link_target.write_bytes(b"keep me too")
    link = store.images_dir / "s" / "link.png"
    link.symlink_to(link_target)
    attempts = [
        outside,
        store.images_dir / ".." / ".." / "precious.png",
        link,
        Path("/etc/hostname"),
        store.images_dir,
        tmp_path,
    ]
    assert await store.prune(attempts) == 0
    assert outside.read_bytes() == b"keep me" and link_target.read_bytes() == b"keep me too"
    assert inside.path.exists() and store.images_dir.is_dir()


async def test_read_returns_bytes_and_missing_file_is_a_store_error(store):
    stored = await store.save(None, "r", encode(solid(8, 8)))
    assert await store.read(stored.path) == stored.path.read_bytes()
    with pytest.raises(StoreError, match="cannot read"):
        await store.read(store.images_dir / "nope.png")


async def test_a_cancelled_save_ends_only_once_its_thread_has_put_the_file_in_place(store, monkeypatch):
    # The losing copy of a backup race is cancelled while its image is being stored: had the save given up on its
    # thread at once, the run would end with a temp file still on disk (an image file no job row names).
    writing, release = threading.Event(), threading.Event()
    real_replace = os.replace

    def held_replace(src, dst):
        writing.set()
        release.wait(30)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", held_replace)
    save = asyncio.create_task(store.save(None, "raced", encode(solid(32, 32))))
    assert await asyncio.to_thread(writing.wait, 30)
    save.cancel()
    # An observation window, not a wait for anything: a save that gave up on its thread ends at the next loop turn.
    ended, _ = await asyncio.wait({save}, timeout=0.2)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await save
    assert not ended, "the cancelled save ended while its thread was still writing"
    assert sorted(p.name for p in (store.images_dir / "_batch").iterdir()) == ["raced.png", "raced_thumb.jpg"]
