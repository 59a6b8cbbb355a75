"""Uploads: accepted formats pass with their facts; refusals leave the quarantine empty; the quota counts kept files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from orchestrator.config import LimitSettings
from orchestrator.errors import InputError, LimitExceeded
from orchestrator.uploads import Uploads, megabytes, owner_dir


def encoded(fmt: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
async def test_accepted_formats_are_quarantined_with_their_facts(tmp_path, fmt, suffix):
    uploads = Uploads(tmp_path, LimitSettings())
    up = await uploads.receive("42", encoded(fmt))
    assert up.path.parent == tmp_path / "quarantine" and up.path.suffix == suffix
    assert (up.facts.format, up.facts.width, up.facts.height) == (fmt, 40, 30)
    await uploads.discard(up)
    assert not up.path.exists()


async def test_refused_bytes_leave_the_quarantine_empty(tmp_path):
    uploads = Uploads(tmp_path, LimitSettings(max_upload_pixels=1000))
    with pytest.raises(InputError) as e:
        await uploads.receive("42", encoded("PNG", (50, 50)))
    assert "50x50" in e.value.user_message
    assert list((tmp_path / "quarantine").iterdir()) == []


async def test_quota_counts_the_members_kept_files(tmp_path):
    uploads = Uploads(tmp_path, LimitSettings(upload_quota_bytes=1000))
    folder = owner_dir(tmp_path, "42")
    folder.mkdir(parents=True)
    (folder / "old.png").write_bytes(b"x" * 900)
    with pytest.raises(LimitExceeded):
        await uploads.check_size("42", 200)
    await uploads.check_size("43", 200)  # another member's folder is empty
    assert owner_dir(tmp_path, "../etc").name == "_other"


def test_megabytes_reads_well():
    assert megabytes(20 * 1024 * 1024) == "20 MB"
    assert megabytes(int(3.4 * 1024 * 1024)) == "3.4 MB"
    assert megabytes(512 * 1024) == "512 KB"


async def test_purge_empties_what_a_crash_left_in_the_quarantine(tmp_path):
    uploads = Uploads(tmp_path, LimitSettings())
    assert await uploads.purge() == 0
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "abc.part").write_bytes(b"half an image")
    assert await uploads.purge() == 1
    assert list((tmp_path / "quarantine").iterdir()) == []
