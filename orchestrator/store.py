"""ImageStore: PNGs, thumbnails and contact sheets on disk; every Pillow call runs in a worker thread."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from orchestrator.errors import LocalStoreError, StoreError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: session and image ids become path parts: ASCII letters, digits, _ and - only (no dots, no separators)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BATCH_DIR = "_batch"
THUMB_SUFFIX = "_thumb.jpg"
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A saved image: the full-size PNG, its JPEG thumbnail and its size."""

    path: Path
    thumbnail: Path
    width: int
    height: int


def safe_name(untrusted: str) -> str:
    """Turn a file name chosen by a ComfyUI node into a harmless base name (no path, no control chars)."""
    # NFKC folds lookalikes such as fullwidth solidus (U+FF0F) or full stop (U+FF0E) into ASCII before we split
    text = unicodedata.normalize("NFKC", untrusted)
    base = re.split(r"[/\\]", text)[-1]
    base = _SAFE_CHARS.sub("_", base).strip("._-")
    base = re.sub(r"\.{2,}", ".", base)
    return base[:100] or "image"


def check_id(value: str | None, what: str) -> str:
    """Return the id if it is safe as a path part, else raise StoreError."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise StoreError(f"unsafe {what} {value!r}: expected 1-64 of A-Z a-z 0-9 _ -")
    return value


class ImageStore:
    """Images of every job under one directory: `{session or _batch}/{image_id}.png` plus a JPEG thumbnail."""

    safe_name = staticmethod(safe_name)

    def __init__(self, images_dir: Path, *, thumb_size: int = 256, max_pixels: int = 64_000_000) -> None:
        self.images_dir = Path(images_dir)
        self.thumb_size = thumb_size
        self.max_pixels = max_pixels
        # Resolved once: resolving walks the file system, and path checks run on the event loop.
        self._root = self.images_dir.resolve()

    @property
    def root(self) -> Path:
        """The resolved images directory every written or deleted path must stay in."""
        return self._root

    def path_for(self, session_id: str | None, image_id: str) -> Path:
        """Where an image's full-size PNG lives."""
        # check_id admits one plain path part (no separator, no dot-dot), so the path cannot leave the store and
        # needs no resolving; paths that come from elsewhere go through _inside.
        folder = BATCH_DIR if session_id is None else check_id(session_id, "session id")
        return self.images_dir / folder / f"{check_id(image_id, 'image id')}.png"

    def thumbnail_for(self, session_id: str | None, image_id: str) -> Path:
        """Where an image's thumbnail lives."""
        png = self.path_for(session_id, image_id)
        return png.with_name(png.stem + THUMB_SUFFIX)

    async def save(self, session_id: str | None, image_id: str, data: bytes) -> StoredImage:
        """Check the bytes are a sane image, store them as PNG and write a thumbnail (atomically)."""
        path = self.path_for(session_id, image_id)
        thumb = self.thumbnail_for(session_id, image_id)
        try:
            return await _to_the_end(asyncio.to_thread(self._save, path, thumb, data))
        except OSError as e:
            # The node's bytes were fine (they decoded); our disk refused them.
            raise LocalStoreError(f"cannot write {path.name}: {e.strerror or e}") from e

    async def read(self, path: Path) -> bytes:
        """The bytes of a stored (or any local) image file."""
        try:
            return await asyncio.to_thread(Path(path).read_bytes)
        except OSError as e:
            raise StoreError(f"cannot read image {Path(path).name}: {e.strerror or e}") from e

    async def jpeg(self, path: Path, *, max_side: int, quality: int = 85, max_bytes: int | None = None) -> bytes:
        """A JPEG copy at most max_side wide/high, lowering quality then size until it fits max_bytes."""
        return await asyncio.to_thread(self._jpeg, Path(path), max_side, quality, max_bytes)

    async def contact_sheet(
        self,
        images: Sequence[Path],
        out: Path,
        *,
        labels: Sequence[str] | None = None,
        cell: int = 256,
        columns: int | None = None,
    ) -> Path:
        """A numbered grid of the images (1-based, in order), with optional labels; PNG or JPEG by suffix."""
        if not images:
            raise StoreError("a contact sheet needs at least one image")
        if labels is not None and len(labels) != len(images):
            raise StoreError(f"{len(labels)} labels for {len(images)} images")
        if cell < 32:
            raise StoreError(f"cell size {cell} is too small")
        self._inside(Path(out))
        return await asyncio.to_thread(self._contact_sheet, list(images), Path(out), labels, cell, columns)

    async def prune(self, paths: Sequence[Path]) -> int:
        """Delete full-size files inside the store (thumbnails and anything outside are kept); return the count."""
        return await asyncio.to_thread(self._prune, list(paths))

    # --- worker-thread side ----------------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root):
            raise StoreError(f"path {path} is outside the image store")
        return resolved

    def _open_checked(self, data: bytes) -> Image.Image:
        try:
            # Image.open reads only the header, so the size check below happens before any pixel is decoded
            im = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise StoreError("not an image") from e
        except Image.DecompressionBombError as e:
            raise StoreError(f"image too large: {e}") from e
        w, h = im.size
        if w <= 0 or h <= 0 or w * h > self.max_pixels:
            raise StoreError(f"image too large: {w}x{h} is over {self.max_pixels} pixels")
        try:
            im.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise StoreError(f"not an image: {e}") from e
        return im

    def _save(self, path: Path, thumb: Path, data: bytes) -> StoredImage:
        im = self._open_checked(data)
        if im.format == "PNG" and not getattr(im, "is_animated", False):
            png = data  # already a PNG: keep the node's bytes (and its metadata) instead of re-encoding
        else:
            buf = io.BytesIO()
            frame = im if im.mode in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16") else im.convert("RGB")
            frame.save(buf, "PNG", compress_level=4)
            png = buf.getvalue()
        small = _rgb(im)
        # reducing_gap=1: box-reduce by the largest integer factor first (0.25 ms for 512->256 against 2.6 ms
        # for a bicubic pass), then bicubic for any remainder; the per-image CPU budget is 10 ms.
        small.thumbnail((self.thumb_size, self.thumb_size), Image.Resampling.BICUBIC, reducing_gap=1.0)
        tbuf = io.BytesIO()
        small.save(tbuf, "JPEG", quality=85)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Both files are written before either is put in place: a disk that fills on the thumbnail leaves no PNG
        # behind (a job that then fails for good would leave a file no row names), and the PNG goes in last, so a
        # stored image always has its thumbnail.
        self._write_atomic((thumb, tbuf.getvalue()), (path, png))
        log.debug("stored %s (%dx%d)", path.name, im.width, im.height)
        return StoredImage(path=path, thumbnail=thumb, width=im.width, height=im.height)

    def _write_atomic(self, *files: tuple[Path, bytes]) -> None:
        # Callers pass paths from path_for or already checked with _inside: resolving again costs a file-system walk.
        temps: list[tuple[str, Path]] = []
        try:
            for path, data in files:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
                temps.append((tmp, path))
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            for tmp, path in temps:
                # os.replace is atomic within one directory: readers see the old file or the whole new one
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in temps:
                Path(tmp).unlink(missing_ok=True)
            raise

    def _read_image(self, path: Path) -> Image.Image:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise StoreError(f"cannot read image {path.name}: {e.strerror or e}") from e
        return self._open_checked(data)

    def _jpeg(self, path: Path, max_side: int, quality: int, max_bytes: int | None) -> bytes:
        if max_side < 1:
            raise StoreError(f"max_side {max_side} must be positive")
        return downscaled_jpeg(self._read_image(path), max_side, quality, max_bytes, name=path.name)

    def _contact_sheet(
        self, images: list[Path], out: Path, labels: Sequence[str] | None, cell: int, columns: int | None
    ) -> Path:
        n = len(images)
        cols = max(1, min(n, columns or math.ceil(math.sqrt(n))))
        rows = math.ceil(n / cols)
        sheet = Image.new("RGB", (cols * cell, rows * cell), (24, 24, 24))
        draw = ImageDraw.Draw(sheet)
        number_font = _font(max(12, cell // 10))
        label_font = _font(max(10, cell // 16))
        for i, src in enumerate(images):
            x, y = (i % cols) * cell, (i // cols) * cell
            tile = ImageOps.contain(_rgb(self._read_image(Path(src))), (cell, cell), Image.Resampling.LANCZOS)
            sheet.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
            number = str(i + 1)
            box = draw.textbbox((x + 6, y + 4), number, font=number_font)
            draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
            draw.text((x + 6, y + 4), number, fill=(255, 255, 255), font=number_font)
            if labels is not None and labels[i]:
                text = _fit(draw, labels[i], label_font, cell - 8)
                bottom = draw.textbbox((0, 0), text, font=label_font)[3]
                ty = y + cell - bottom - 6
                draw.rectangle((x, ty - 3, x + cell - 1, y + cell - 1), fill=(0, 0, 0))
                draw.text((x + 4, ty), text, fill=(255, 255, 255), font=label_font)
        buf = io.BytesIO()
        if out.suffix.lower() in (".jpg", ".jpeg"):
            sheet.save(buf, "JPEG", quality=88)
        else:
            sheet.save(buf, "PNG", compress_level=4)
        out.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomic((out, buf.getvalue()))
        return out

    def _prune(self, paths: list[Path]) -> int:
        deleted = 0
        for p in paths:
            try:
                resolved = self._inside(Path(p))
            except StoreError:
                log.warning("prune: refusing %s, it is outside the image store", p)
                continue
            if resolved.name.endswith(THUMB_SUFFIX) or resolved == self.root or not resolved.is_file():
                continue
            resolved.unlink(missing_ok=True)
            deleted += 1
        return deleted


async def _to_the_end(work: Coroutine[Any, Any, _T]) -> _T:
    """
    Await a worker thread's result; a cancel is raised only once the thread is done.

    A thread cannot be stopped: a caller that gave up on it at once would move on (end its run, let a check look
    at the disk, let a stop finish) while the thread still writes a temp file or puts a file in place.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # marked retrieved: the caller's cancel is what it hears, not the write's outcome
        raise asyncio.CancelledError
    return task.result()


def _rgb(im: Image.Image) -> Image.Image:
    """An RGB copy; transparency goes onto white so JPEGs do not turn it black."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError):  # Pillow built without FreeType: the bitmap font has one size
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def downscaled_jpeg(
    im: Image.Image, max_side: int, quality: int, max_bytes: int | None = None, name: str = ""
) -> bytes:
    """
    A JPEG copy at most max_side wide/high, lowering quality then size until it fits max_bytes (CPU work).

    StoreError when even a 32-pixel copy at the lowest quality does not fit.
    """
    im = _rgb(im)
    side = max_side
    while True:
        copy = im.copy()
        copy.thumbnail((side, side), Image.Resampling.LANCZOS)
        q = quality
        while True:
            buf = io.BytesIO()
            copy.save(buf, "JPEG", quality=q, optimize=True)
            if max_bytes is None or buf.tell() <= max_bytes:
                return buf.getvalue()
            if q <= 35:
                break
            q = max(35, q - 15)
        if side <= 32:
            raise StoreError(f"cannot fit {name or 'the image'} into {max_bytes} bytes as JPEG")
        # quality alone did not do it: shrink and start again from the requested quality
        side = max(32, int(max(copy.size) * 0.75))
