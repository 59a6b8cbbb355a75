"""Checkpoint and LoRA choice per session, and an Explorer started from an image alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.config import DEFAULT_CHECKPOINTS, Config
from orchestrator.errors import ImGenError, InputError
from orchestrator.families import guess_family
from orchestrator.models import Family, LoraSpec, Mode
from orchestrator.sessions.explorer import STYLES
from orchestrator.sessions.models import Flow, SessionRequest, SessionSettings
from orchestrator.sessions.planner import Planner
from tests.orchestrator.sessions.conftest import running, serve, small_config

pytestmark = pytest.mark.timeout(90)

MY_XL = "dreamshaper_xl_v2.safetensors"
DETAIL = "detail_tweaker.safetensors"


def with_extra_checkpoint(cfg: Config) -> Config:
    """Every simulated node also holds MY_XL."""
    held = (*sorted(set(DEFAULT_CHECKPOINTS.values())), MY_XL)
    return cfg.with_nodes(tuple(replace(n, sim=replace(n.sim, checkpoints=held)) for n in cfg.nodes if n.sim))


@pytest.fixture
async def xl_farm(tmp_path):
    async with serve(with_extra_checkpoint(small_config(tmp_path))) as bound:
        yield bound


async def test_chosen_checkpoint_and_loras_reach_every_sampling_stage(xl_farm):
    async with running(xl_farm) as h:
        s = await h.svc.create_session(
            SessionRequest(Flow.DRAFT_GRID, "alice", "a fox", checkpoint=MY_XL, loras=[LoraSpec.parse(f"{DETAIL}:0.6")])
        )
        # no family given: the checkpoint's name says SDXL, so the session renders SDXL throughout
        assert s.settings.family is Family.SDXL and s.settings.checkpoint == MY_XL
        assert s.settings.loras == (LoraSpec(DETAIL, 0.6, 0.6),)
        drafts = await h.current_done(s.id)
        assert drafts.delivered == drafts.total
        for j in await h.db.stage_jobs(drafts.id):
            assert j.params.checkpoint == MY_XL and j.params.family is Family.SDXL
            assert j.params.loras == (LoraSpec(DETAIL, 0.6, 0.6),)
        await h.svc.vote(s.id, drafts.image(1).image.id, "alice", 1)
        refined = await h.svc.advance(s.id, "alice")
        for j in await h.db.stage_jobs(refined.id):
            assert j.params.checkpoint == MY_XL and j.params.loras == (LoraSpec(DETAIL, 0.6, 0.6),)
        # the choice survives in the DB
        again = await h.svc.session(s.id)
        assert again.settings.checkpoint == MY_XL and again.settings.loras == s.settings.loras


def test_checkpoint_is_only_used_by_stages_of_the_sessions_family(tmp_path):
    cfg = small_config(tmp_path)
    planner = Planner(None, cfg.settings)  # type: ignore[arg-type]
    ss = SessionSettings(family=Family.SDXL, checkpoint=MY_XL, loras=(LoraSpec(DETAIL),))

    class Row:
        settings = ss
        negative_prompt = "blurry"

    sd15, sdxl = cfg.settings.funnel.stages[0], cfg.settings.funnel.stages[1]
    assert sd15.family is Family.SD15 and sdxl.family is Family.SDXL
    other = planner.render(Row, sd15)  # type: ignore[arg-type]
    mine = planner.render(Row, sdxl)  # type: ignore[arg-type]
    assert other.checkpoint == cfg.settings.checkpoint_for(Family.SD15) and other.loras == (LoraSpec(DETAIL),)
    assert mine.checkpoint == MY_XL and mine.negative == "blurry"


def test_checkpoint_family_is_guessed_from_config_or_name():
    configured = dict(DEFAULT_CHECKPOINTS)
    assert guess_family("v1-5-pruned-emaonly.safetensors", configured) is Family.SD15
    assert guess_family("sd_xl_base_1.0.safetensors", configured) is Family.SDXL
    assert guess_family("ponyDiffusionV6XL.safetensors", configured) is Family.PONY
    assert guess_family("flux1-schnell.safetensors", configured) is Family.FLUX
    assert guess_family("realistic_vision.safetensors", configured) is None


async def test_bad_checkpoint_and_lora_choices_are_refused_clearly(xl_farm):
    async with running(xl_farm) as h:
        refusals = [
            ({"checkpoint": "mystery.safetensors"}, "Which model family"),
            ({"loras": [LoraSpec.parse(f"{DETAIL}:9")]}, "between -4 and 4"),
            ({"loras": [LoraSpec(f"l{i}") for i in range(5)]}, "At most 4 LoRAs"),
        ]
        for kwargs, message in refusals:
            with pytest.raises(InputError) as refused:
                await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox", **kwargs))
            assert message in refused.value.user_message
        with pytest.raises(ImGenError) as missing:
            await h.svc.create_session(
                SessionRequest(Flow.DRAFT_GRID, "alice", "a fox", checkpoint="absent.safetensors", family=Family.SDXL)
            )
        assert "absent.safetensors" in missing.value.user_message
        with pytest.raises(ImGenError) as no_lora:
            await h.svc.create_session(
                SessionRequest(Flow.DRAFT_GRID, "alice", "a fox", loras=[LoraSpec("nope.safetensors")])
            )
        assert "nope.safetensors" in no_lora.value.user_message
        assert await h.svc.active_sessions() == []


async def test_explorer_from_an_image_alone_varies_the_image(xl_farm, tmp_path):
    src = tmp_path / "holiday.png"
    Image.new("RGB", (96, 64), (20, 120, 200)).save(src)
    async with running(xl_farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.EXPLORER, "alice", "", image_path=src))
        assert s.prompt == "" and s.settings.aspect == "3:2"
        first = await h.current_done(s.id)
        assert first.delivered == first.total == 4
        jobs = await h.db.stage_jobs(first.id)
        # nothing but the image describes the content: every variation is img2img from it
        assert all(j.params.mode is Mode.IMG2IMG for j in jobs)
        assert {j.params.prompt for j in jobs} <= {"", *STYLES}
        assert any(j.params.prompt in STYLES for j in jobs)
        styled = next(im for im in first.images if im.image.prompt in STYLES)
        nxt = await h.svc.pick(s.id, "alice", styled.image.id)
        assert (await h.svc.session(s.id)).prompt == "", "the style's text alone would lose the picture's subject"
        second = await h.current_done(s.id)
        jobs = await h.db.stage_jobs(nxt.id)
        assert second.delivered == 4 and all(j.params.init_image == styled.image.path for j in jobs)


async def test_explorer_from_one_of_our_images_takes_its_prompt(xl_farm):
    async with running(xl_farm) as h:
        d = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse --no people"))
        img = (await h.current_done(d.id)).image(2).image
        s = await h.svc.create_session(SessionRequest(Flow.EXPLORER, "bob", "", image_path=Path(img.path)))
        assert s.prompt == img.prompt == "a lighthouse" and s.negative_prompt == "people"
        with pytest.raises(InputError) as empty:
            await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "bob", "", image_path=Path(img.path)))
        assert empty.value.user_message == "The prompt is empty."


async def test_variations_carry_the_sessions_checkpoint_and_loras(xl_farm):
    async with running(xl_farm) as h:
        lora = LoraSpec.parse(f"{DETAIL}:0.6")
        s = await h.svc.create_session(
            SessionRequest(Flow.DRAFT_GRID, "alice", "a fox", checkpoint=MY_XL, loras=[lora])
        )
        drafts = await h.current_done(s.id)
        ex = await h.svc.variations("alice", drafts.image(1).image.id)
        assert ex.flow is Flow.EXPLORER
        assert ex.settings.checkpoint == MY_XL and ex.settings.loras == (LoraSpec(DETAIL, 0.6, 0.6),)
        round1 = await h.current_done(ex.id)
        jobs = await h.db.stage_jobs(round1.id)
        assert jobs and all(j.params.checkpoint == MY_XL for j in jobs)
        assert all(j.params.loras == (LoraSpec(DETAIL, 0.6, 0.6),) for j in jobs)


async def test_concept_and_explorer_take_a_checkpoint_and_loras(xl_farm):
    async with running(xl_farm) as h:
        for flow in (Flow.CONCEPT, Flow.EXPLORER):
            s = await h.svc.create_session(
                SessionRequest(flow, "alice", "a fox", checkpoint=MY_XL, loras=[LoraSpec.parse(DETAIL)])
            )
            first = await h.current_done(s.id)
            jobs = await h.db.stage_jobs(first.id)
            assert jobs and all(j.params.checkpoint == MY_XL and j.params.family is Family.SDXL for j in jobs)
            assert all(j.params.loras == (LoraSpec(DETAIL),) for j in jobs)
            await h.svc.end(s.id, "alice")
