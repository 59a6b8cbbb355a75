"""
The image store that active and standby instances share: a marker proves they see the same directory.

The active instance writes its id and a fresh nonce into `<images>/.vibes-active` and records the nonce in the
database. A standby reads both: when it can see the database's nonce but not the same file, it is looking at a
different directory (a local disk instead of the shared volume) and would lose every image after a takeover.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.models import InstanceInfo

MARKER_NAME = ".vibes-active"


@dataclass(frozen=True, slots=True)
class StoreMarker:
    """Who became active last, and the nonce it wrote."""

    instance_id: str
    nonce: str


class SharedStoreError(ConfigError):
    """An instance does not see the image store the active instance writes to."""

    def __init__(self, directory: Path, message: str) -> None:
        super().__init__(str(directory), "storage.data_dir", message)


def marker_path(images_dir: Path) -> Path:
    return images_dir / MARKER_NAME


def _write(images_dir: Path, marker: StoreMarker) -> None:
    images_dir.mkdir(parents=True, exist_ok=True)
    path = marker_path(images_dir)
    tmp = path.with_name(f"{MARKER_NAME}.{marker.nonce}.tmp")
    tmp.write_text(json.dumps({"instance": marker.instance_id, "nonce": marker.nonce}), encoding="utf-8")
    # Atomic on every POSIX file system a network volume offers: a reader sees the old marker or the new one.
    os.replace(tmp, path)


def _read(images_dir: Path) -> StoreMarker | None:
    try:
        raw = json.loads(marker_path(images_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("instance"), str) or not isinstance(raw.get("nonce"), str):
        return None
    return StoreMarker(raw["instance"], raw["nonce"])


async def write_marker(images_dir: Path, instance_id: str) -> StoreMarker:
    """A new marker for this (now active) instance, written into the store (off the event loop: it may be NFS)."""
    marker = StoreMarker(instance_id, secrets.token_hex(8))
    await asyncio.to_thread(_write, images_dir, marker)
    return marker


async def read_marker(images_dir: Path) -> StoreMarker | None:
    return await asyncio.to_thread(_read, images_dir)


class StoreCheck:
    """
    A standby's check, poll after poll, that it sees the marker the active instance recorded in the database.

    The active instance writes the file before the database, so right at a takeover the file can be one marker ahead:
    a difference is only a problem when it lasts `patience` polls in a row.
    """

    def __init__(self, images_dir: Path, *, patience: int = 3) -> None:
        self.images_dir = images_dir
        self.patience = patience
        self.verified: str | None = None
        self._misses = 0

    async def __call__(self, active: InstanceInfo | None) -> None:
        if active is None or active.store_nonce is None or active.store_nonce == self.verified:
            return
        seen = await read_marker(self.images_dir)
        if seen is not None and seen.nonce == active.store_nonce:
            self.verified = active.store_nonce
            self._misses = 0
            return
        self._misses += 1
        if self._misses < self.patience:
            return
        what = "no marker" if seen is None else f"the marker of instance {seen.instance_id}"
        raise SharedStoreError(
            self.images_dir,
            f"this instance does not see the image store of the active instance {active.id} on {active.host}: "
            f"{marker_path(self.images_dir)} holds {what}. Every instance must use the same images directory "
            "(a shared network volume mounted at the same storage.data_dir); "
            "see README 'Two hosts: active and standby'",
        )
