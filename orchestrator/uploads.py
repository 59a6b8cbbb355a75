"""
Images members upload: checked before they cost anything, held in a quarantine until their session is accepted.

The order is the point: the declared size and the member's quota are checked before a byte is downloaded; the
bytes go to `quarantine/` (never into the image store); only PNG, JPEG and WebP are opened, and their pixel
count is read from the header before anything is decoded. A session that is accepted copies the file into
`inputs/<member>/`; every other path deletes it. What a member keeps in `inputs/<member>/` counts against their
upload quota.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from orchestrator.config import LimitSettings
from orchestrator.errors import InputError, LimitExceeded

log = logging.getLogger(__name__)

#: the only decoders a member's file reaches (Pillow would otherwise try every format it knows, EPS included)
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
QUARANTINE = "quarantine"
INPUTS = "inputs"
_SAFE_OWNER = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: magic bytes of formats people send by mistake (or on purpose), to say what a refused file looks like
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x0a\x05\x01", "PCX"),
    (b"\x01\xda", "SGI"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"PK\x03\x04", "ZIP"),
)


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the header of an accepted image says."""

    format: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height


@dataclass(frozen=True, slots=True)
class Upload:
    """A member's checked image, waiting in quarantine for its session to be accepted."""

    owner_id: str
    path: Path
    size: int
    facts: ImageFacts


def megabytes(n: int) -> str:
    """Bytes in the words a member reads: `20 MB`, `3.4 MB`, `512 KB`."""
    if n < 1024 * 1024:
        return f"{max(1, round(n / 1024))} KB"
    mb = n / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 10 or mb == int(mb) else f"{mb:.1f} MB"


def owner_dir(data_dir: Path, owner_id: str) -> Path:
    """Where a member's accepted uploads are kept (one folder per member, so the quota is one directory walk)."""
    folder = owner_id if _SAFE_OWNER.fullmatch(owner_id) else "_other"
    return Path(data_dir) / INPUTS / folder


def _looks_like(head: bytes) -> str | None:
    stripped = head.lstrip()
    for magic, name in _SIGNATURES:
        if head.startswith(magic) or stripped.startswith(magic):
            return name
    return None


def inspect_image(path: Path, max_pixels: int) -> ImageFacts:
    """
    Open `path` as PNG, JPEG or WebP only, check its pixels from the header, then decode it; InputError if not.

    Runs in a worker thread (it decodes). Every message says what is wrong with the member's own file.
    """
    try:
        with Image.open(path, formats=ACCEPTED_FORMATS) as im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise InputError("empty image", user_message="That image has no pixels.")
            if width * height > max_pixels:
                raise InputError(
                    "too many pixels",
                    user_message=f"That image is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
                    f"the limit is {max_pixels / 1e6:g} megapixels. Scale it down and try again.",
                )
            fmt = str(im.format)
            # Only now the pixels are decoded: the header said the image is within the cap.
            im.load()
    except UnidentifiedImageError:
        with open(path, "rb") as f:
            head = f.read(16)
        kind = _looks_like(head)
        seems = f" (it looks like {kind})" if kind else ""
        raise InputError(
            "not an accepted image", user_message=f"That file is not a PNG, JPEG or WebP image{seems}."
        ) from None
    except Image.DecompressionBombError as e:
        # Pillow refuses the header itself (over twice its own cap) before we could read the size: its message
        # carries the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f" ({int(found[1]) / 1e6:.1f} megapixels)" if found else ""
        raise InputError(
            "decompression bomb",
            user_message=f"That image is far too large{size}; the limit is {max_pixels / 1e6:g} megapixels. "
            "Scale it down and try again.",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise InputError(
            "damaged image", user_message="That image file is damaged or cut short: it cannot be read."
        ) from None
    return ImageFacts(fmt, width, height)


class Uploads:
    """The quarantine and the per-member quota for uploaded images."""

    def __init__(self, data_dir: Path, limits: LimitSettings) -> None:
        self.data_dir = Path(data_dir)
        self.limits = limits
        self.quarantine_dir = self.data_dir / QUARANTINE

    async def used_bytes(self, owner_id: str) -> int:
        """What the member's kept uploads take on disk."""

        def walk() -> int:
            folder = owner_dir(self.data_dir, owner_id)
            if not folder.is_dir():
                return 0
            return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

        return await asyncio.to_thread(walk)

    async def check_size(self, owner_id: str, size: int) -> None:
        """Refuse an upload by its size alone (Discord's metadata first, the bytes after): limit and quota."""
        lim = self.limits
        if size > lim.max_upload_bytes:
            raise InputError(
                "upload too large",
                user_message=f"That image is {megabytes(size)}; the limit is {megabytes(lim.max_upload_bytes)}.",
            )
        used = await self.used_bytes(owner_id)
        if used + size > lim.upload_quota_bytes:
            raise LimitExceeded(
                "upload quota",
                user_message=f"Your kept uploads take {megabytes(used)} of the {megabytes(lim.upload_quota_bytes)} "
                "each member may keep, and this image does not fit. Explore from a prompt or one of the bot's "
                "images instead, or ask an admin to clear your old uploads.",
            )

    async def receive(self, owner_id: str, data: bytes) -> Upload:
        """Write the downloaded bytes into the quarantine and check them; the file is gone again if refused."""
        await self.check_size(owner_id, len(data))
        part = self.quarantine_dir / f"{uuid.uuid4().hex}.part"

        def admit() -> Upload:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            part.write_bytes(data)
            try:
                facts = inspect_image(part, self.limits.max_upload_pixels)
                final = part.with_suffix(EXTENSIONS[facts.format])
                os.replace(part, final)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            return Upload(owner_id, final, len(data), facts)

        upload = await asyncio.to_thread(admit)
        facts = upload.facts
        log.info("upload owner=%s %s %dx%d %d bytes quarantined", owner_id, facts.format, *facts.size, upload.size)
        return upload

    async def purge(self) -> int:
        """Empty the quarantine (files left by a crash between download and answer); return how many went."""

        def empty() -> int:
            if not self.quarantine_dir.is_dir():
                return 0
            gone = 0
            for p in self.quarantine_dir.iterdir():
                if p.is_file():
                    p.unlink(missing_ok=True)
                    gone += 1
            return gone

        gone = await asyncio.to_thread(empty)
        if gone:
            log.info("quarantine: removed %d files left from before", gone)
        return gone

    async def discard(self, upload: Upload) -> None:
        """Delete the quarantined file (its session was refused, or it has been copied into `inputs/`)."""
        await asyncio.to_thread(upload.path.unlink, missing_ok=True)
