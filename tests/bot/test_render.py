"""Renderers and gallery layouts stay within Discord's limits (no Discord connection)."""

from __future__ import annotations

import uuid

import discord

from bot import limits, render
from bot.tracker import StageProgress
from bot.views.final import final_view
from bot.views.gallery import GalleryMode, gallery_view
from bot.views.suggestion import suggestion_view
from orchestrator.events import JobFinished, JobProgress, JobRetried, JobStarted
from orchestrator.models import ImageRecord
from orchestrator.service import FarmHealth
from orchestrator.sessions.models import (
    ConceptState,
    Flow,
    Role,
    Session,
    SessionSettings,
    SessionState,
    StageImage,
    StageKind,
    StageStatus,
    StageView,
    Visibility,
)


def uid() -> str:
    return uuid.uuid4().hex


def image(n: int, node: str = "gpu-a", seconds: float = 2.0) -> ImageRecord:
    return ImageRecord(
        id=uid(),
        job_id=uid(),
        path=f"/x/{n}.png",
        thumbnail=f"/x/{n}.jpg",
        node_id=node,
        seed=n,
        seconds=seconds,
        checkpoint="ck",
        width=512,
        height=512,
        prompt="p",
        index=n,
    )


def stage(n_images: int, *, total: int | None = None, votes: dict[int, dict[str, int]] | None = None) -> StageView:
    votes = votes or {}
    imgs = tuple(
        StageImage(number=i, image=image(i), tally=sum(votes.get(i, {}).values()), votes=votes.get(i, {}))
        for i in range(1, n_images + 1)
    )
    return StageView(
        id=uid(),
        session_id=uid(),
        index=0,
        name="drafts",
        kind=StageKind.STAGE,
        is_final=False,
        status=StageStatus.VOTING,
        total=total or n_images,
        delivered=n_images,
        failed=0,
        images=imgs,
        selection=(),
    )


def session(**kw) -> Session:
    base = dict(
        id=uid(),
        flow=Flow.DRAFT_GRID,
        owner_id="111",
        visibility=Visibility.OPEN,
        state=SessionState.VOTING,
        prompt="a lighthouse at dusk " * 30,
        negative_prompt="blurry",
        settings=SessionSettings(count=20),
        stage_index=0,
        stage_name="drafts",
        stage_id=None,
        participants={"111": Role.OWNER},
        suggestion=None,
        concept=None,
        explorer_pick=None,
        final_image_id=None,
        created_at=0.0,
    )
    base.update(kw)
    return Session(**base)


def check_components(view: discord.ui.View) -> list[dict]:
    rows = view.to_components()
    assert len(rows) <= limits.MAX_ROWS
    for row in rows:
        comps = row["components"]
        assert 1 <= len(comps) <= limits.MAX_BUTTONS_PER_ROW
        for c in comps:
            assert c["custom_id"].startswith("imgen:") and len(c["custom_id"]) <= limits.CUSTOM_ID_MAX
            if "label" in c:
                assert len(c["label"]) <= limits.BUTTON_LABEL
    return rows


def test_ten_image_gallery_has_four_toggle_rows_and_a_control_row():
    st = stage(20)
    pages = render.gallery_pages(st)
    assert [len(p.images) for p in pages] == [10, 10]
    rows = check_components(gallery_view("s" * 32, st, pages[1], GalleryMode.VOTE))
    labels = [[c["label"] for c in r["components"]] for r in rows]
    assert labels[0] == ["✓11", "✓12", "✓13", "✓14", "✓15"]
    assert labels[1] == ["✗11", "✗12", "✗13", "✗14", "✗15"]
    assert labels[2][0] == "✓16" and labels[3][-1] == "✗20"
    assert [lbl.split()[0] for lbl in labels[4]] == ["Continue", "Regenerate", "Feedback", "End"]


def test_tallies_show_on_the_buttons():
    st = stage(3, votes={2: {"a": 1, "b": 1, "c": -1}})
    rows = check_components(gallery_view("s", st, render.gallery_pages(st)[0], GalleryMode.VOTE))
    assert rows[0]["components"][1]["label"] == "✓2 · 2"
    assert rows[1]["components"][1]["label"] == "✗2 · 1"


def test_explorer_and_concept_galleries_fit():
    st = stage(10)
    page = render.gallery_pages(st)[0]
    check_components(gallery_view("s", st, page, GalleryMode.EXPLORER))
    rows = check_components(gallery_view("s", st, page, GalleryMode.CONCEPT))
    assert rows[0]["components"][0]["label"] == "Pick 1"


def test_final_and_suggestion_views_fit():
    check_components(final_view("s" * 32, "i" * 32))
    assert len(final_view("s", "i", upscaled=True).to_components()[0]["components"]) == 3
    check_components(suggestion_view("s" * 32))


def test_page_of():
    assert [render.page_of(n) for n in (1, 10, 11, 20, 21)] == [0, 0, 1, 1, 2]


def test_header_and_status_embeds_fit():
    s = session(participants={str(i): Role.VOTER for i in range(300)})
    for e in (render.header_embed(s), render.status_embed(s, stage(20, votes={1: {str(i): 1 for i in range(200)}}))):
        assert len(e) <= limits.MAX_EMBED_TOTAL
        assert all(len(f.value) <= limits.EMBED_FIELD_VALUE for f in e.fields)
        assert len(e.title or "") <= limits.EMBED_TITLE


def test_gallery_content_shows_concept_fields_and_options():
    st = stage(3)
    st = StageView(**{**{f: getattr(st, f) for f in st.__dataclass_fields__}, "options": ("oil", "ink", "clay")})
    s = session(flow=Flow.CONCEPT, concept=ConceptState(locked={"subject": "a fox"}, current_field="style"))
    text = render.gallery_content(st, render.gallery_pages(st)[0], session=s)
    assert "a fox" in text and "**2** ink" in text and "Pick" in text
    assert len(text) <= limits.MAX_CONTENT


def test_gpus_embed_never_shows_errors_or_hosts():
    from orchestrator.service import NodeStatus

    nodes = [
        NodeStatus(
            id=f"gpu-{i}",
            name=f"GPU {i}",
            tier="draft",
            healthy=i % 2 == 0,
            capabilities=("sd15",),
            loaded_checkpoint="v1-5.safetensors",
            queue_length=2,
            in_flight=1,
            seconds_per_step={"sd15": 0.1},
            measured=True,
            recent_failures=1,
            last_error="connect to 203.0.113.9:8188 refused",
            last_response_ms=3.0,
            completed=7,
        )
        for i in range(30)
    ]
    e = render.gpus_embed(nodes)
    assert len(e) <= limits.MAX_EMBED_TOTAL and len(e.fields) <= limits.EMBED_FIELDS
    assert "203.0.113" not in str(e.to_dict())


def test_gpus_embed_shows_listener_restarts_and_the_engines_health():
    from orchestrator.service import FarmHealth, NodeStatus

    node = NodeStatus(
        id="gpu-a",
        name="GPU A",
        tier="draft",
        healthy=True,
        capabilities=("sd15",),
        loaded_checkpoint=None,
        queue_length=0,
        in_flight=0,
        seconds_per_step={},
        measured=False,
        recent_failures=0,
        last_error=None,
        last_response_ms=None,
        completed=0,
        listener_restarts=2,
        dropped_frames=5,
    )
    health = FarmHealth(task_restarts=3, reconciler_heals=1, backups_started=4, backups_won=3, db_retries=5)
    e = render.gpus_embed([node], health).to_dict()
    assert "listener restarts: 2" in e["fields"][0]["value"]
    assert "malformed messages dropped: 5" in e["fields"][0]["value"]
    footer = e["footer"]["text"]
    assert "3 task restarts" in footer and "1 reconciler heals" in footer and "4 backup copies (3 won)" in footer


def test_progress_content_shows_bar_nodes_eta_and_failover():
    tr = StageProgress("s", "st", "drafts", 0, 4)
    tr.apply(JobStarted("j1", "b", "gpu-a", 1, "s", "st"))
    tr.apply(JobProgress("j1", "b", "gpu-a", 3, 10, "s", "st"))
    text = render.progress_content(tr.snapshot())
    assert "0/4" in text and "gpu-a 0✓ 1⟳ 3/10" in text and "measuring" in text
    tr.apply(JobRetried("j1", "b", "gpu-a", "node down", 1, "s", "st"))
    tr.apply(JobStarted("j1", "b", "gpu-b", 2, "s", "st"))
    img = image(1, node="gpu-b", seconds=2.0)
    img = ImageRecord(**{**{f: getattr(img, f) for f in img.__dataclass_fields__}, "job_id": "j1"})
    assert tr.apply(JobFinished("j1", "b", img, "s", "st"))
    assert not tr.apply(JobFinished("j1", "b", img, "s", "st")), "a duplicate finish changes nothing"
    text = render.progress_content(tr.snapshot())
    assert "1/4" in text and "moved from gpu-a to gpu-b (node down)" in text
    assert "ETA ~6 s" in text
    assert len(text) <= limits.MAX_CONTENT


def test_progress_says_the_next_stage_is_being_prepared_only_once_the_stage_is_done():
    tr = StageProgress("s", "st", "drafts", 0, 1)
    tr.speculating = True
    assert render.SPECULATING_TEXT not in render.progress_content(tr.snapshot()), "still rendering: not yet"
    tr.finished = True
    assert "preparing the next stage from the current votes" in render.progress_content(tr.snapshot())
    tr.speculating = False
    assert render.SPECULATING_TEXT not in render.progress_content(tr.snapshot())


def test_gpus_footer_shows_speculative_gpu_seconds():
    health = FarmHealth(speculative_useful_s=12.4, speculative_wasted_s=3.2)
    footer = render.gpus_embed([], health).footer.text or ""
    assert "12 useful" in footer and "3 wasted" in footer


def test_progress_bar():
    assert render.progress_bar(0, 10, 10) == "░" * 10
    assert render.progress_bar(5, 10, 10) == "█" * 5 + "░" * 5
    assert render.progress_bar(10, 10, 10) == "█" * 10


def test_gpus_embed_shows_a_checkpoint_the_node_keeps_cached():
    from orchestrator.service import NodeStatus

    def node(kept):
        return NodeStatus(
            id="gpu-a", name="GPU A", tier="standard", healthy=True, capabilities=("sd15", "sdxl"),
            loaded_checkpoint="sd_xl_base_1.0.safetensors", queue_length=0, in_flight=0, seconds_per_step={},
            measured=False, recent_failures=0, last_error=None, last_response_ms=None, completed=0,
            kept_checkpoint=kept,
        )  # fmt: skip

    kept = render.gpus_embed([node("v1-5-pruned-emaonly.safetensors")]).fields[0].value
    assert "loaded: sd_xl_base_1.0.safetensors · kept: v1-5-pruned-emaonly.safetensors" in kept
    assert "kept" not in render.gpus_embed([node(None)]).fields[0].value
