"""Concept Builder and Explorer end to end on the simulated farm, plus variations, branch and feedback."""

from __future__ import annotations

import pytest
from PIL import Image

from orchestrator.errors import InputError, InvalidState
from orchestrator.models import Mode
from orchestrator.sessions.models import CONCEPT_FIELDS, Flow, SessionRequest, SessionState, StageStatus
from tests.orchestrator.sessions.conftest import running

pytestmark = pytest.mark.timeout(90)


async def test_concept_builder_locks_fields_and_renders_a_final(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.CONCEPT, "alice", "a lighthouse", fields={"mood": "serene"}))
        assert s.concept.locked == {"subject": "a lighthouse", "mood": "serene"} and s.concept.current_field == "style"
        view = await h.current_done(s.id)
        assert view.field == "style" and view.total == 3 == len(view.options)
        jobs = await h.db.stage_jobs(view.id)
        assert len({j.params.seed for j in jobs}) == 1, "a round holds the seed so only the field differs"
        assert all(j.params.prompt.startswith("a lighthouse, ") and j.params.prompt.endswith("serene") for j in jobs)

        picked = view.image(2)
        nxt = await h.svc.pick(s.id, "alice", picked.image.id)
        assert nxt.field == "composition"
        s = await h.svc.session(s.id)
        assert s.concept.locked["style"] == view.options[1]
        assert view.options[1] in s.prompt

        await h.current_done(s.id)
        await h.svc.concept_set_field(s.id, "alice", "  wide   shot ")  # typed by the user
        assert (await h.svc.session(s.id)).concept.locked["composition"] == "wide shot"
        # lighting and palette by votes + Continue (the best-voted option is picked)
        for field in ("lighting", "palette"):
            cur = await h.current_done(s.id)
            assert cur.field == field
            await h.svc.vote(s.id, cur.image(3).image.id, "bob", 1)
            await h.svc.advance(s.id, "bob")
        final = await h.svc.current_stage(s.id)
        assert final.name == "final" and final.total == 1
        s = await h.svc.session(s.id)
        assert set(s.concept.locked) == set(CONCEPT_FIELDS) and s.concept.current_field is None
        await h.stage_done(final.id)
        up = await h.started(s.id, "upscale")
        await h.stage_done(up.stage_id)
        s = await h.svc.session(s.id)
        assert s.state is SessionState.FINISHED
        info = await h.svc.image_info(s.final_image_id)
        assert info.mode is Mode.UPSCALE
        final_job = await h.db.get_job(info.parent_id)
        assert final_job.params.prompt.startswith("a lighthouse, ") and "wide shot" in final_job.params.prompt

        back = await h.svc.back(s.id, "alice")
        assert back.name == "final"


async def test_concept_builder_refuses_bad_input(farm):
    async with running(farm) as h:
        with pytest.raises(InputError):
            await h.svc.create_session(SessionRequest(Flow.CONCEPT, "alice", "a cat", fields={"flavour": "sweet"}))
        with pytest.raises(InputError):
            await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a cat", fields={"style": "ink"}))
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a cat"))
        with pytest.raises(InvalidState):
            await h.svc.concept_set_field(s.id, "alice", "ink")


async def test_explorer_rounds_around_picks_then_upscale(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.EXPLORER, "alice", "a red fox in snow"))
        first = await h.current_done(s.id)
        assert first.total == 4 and len(first.options) == 4
        jobs = await h.db.stage_jobs(first.id)
        assert all(j.params.mode is Mode.TXT2IMG for j in jobs)
        pick = first.image(1).image
        nxt = await h.svc.pick(s.id, "alice", pick.id)
        assert nxt.name == "round 2" and nxt.options[:2] == ("subtle", "strong")
        second = await h.current_done(s.id)
        jobs = {j.spec.index: j for j in await h.db.stage_jobs(second.id)}
        assert jobs[1].params.mode is Mode.IMG2IMG and jobs[1].params.init_image == pick.path
        assert jobs[1].spec.parent_id == pick.id and jobs[2].params.denoise > jobs[1].params.denoise
        assert (await h.svc.session(s.id)).explorer_pick == pick.id

        up = await h.svc.upscale(s.id, "alice", second.image(2).image.id)
        assert up.name == "upscale"
        await h.stage_done(up.id)
        s = await h.svc.session(s.id)
        assert s.final_image_id == (await h.svc.stage(up.id)).images[0].image.id
        assert s.state is SessionState.VOTING, "an Explorer goes on after an upscale"
        # any image of the session can be the next pick
        again = await h.svc.pick(s.id, "alice", first.image(3).image.id)
        assert again.status is StageStatus.GENERATING


async def test_explorer_from_a_users_image(farm, tmp_path):
    src = tmp_path / "mine.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(src)
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.EXPLORER, "alice", "a red square", image_path=src))
        view = await h.current_done(s.id)
        assert view.delivered == view.total == 4
        jobs = await h.db.stage_jobs(view.id)
        assert jobs[0].params.mode is Mode.IMG2IMG and jobs[0].params.init_image.endswith(".png")
        bad = tmp_path / "bad.png"
        bad.write_text("not an image")
        with pytest.raises(InputError):
            await h.svc.create_session(SessionRequest(Flow.EXPLORER, "alice", "x", image_path=bad))


async def test_variations_and_branch_start_new_sessions_from_an_image(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox"))
        drafts = await h.current_done(s.id)
        img = drafts.image(2).image
        ex = await h.svc.variations("bob", img.id)
        assert ex.flow is Flow.EXPLORER and ex.owner_id == "bob" and ex.explorer_pick == img.id
        ex_view = await h.current_done(ex.id)
        assert ex_view.delivered == 4
        br = await h.svc.branch(s.id, "carol", img.id)
        assert br.flow is Flow.DRAFT_GRID and br.stage_name == "refined"
        view = await h.current_done(br.id)
        assert view.total == 3 and {im.image.parent_id for im in view.images} == {img.id}


async def test_feedback_suggestion_apply_and_undo(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse at dusk"))
        view = await h.current_done(s.id)
        await h.svc.vote(s.id, view.image(1).image.id, "alice", 1)
        await h.svc.vote(s.id, view.image(2).image.id, "alice", -1)
        result = await h.svc.refine(s.id, "alice", "warmer light, no people")
        assert result.source.value == "rules"
        s = await h.svc.session(s.id)
        assert s.suggestion is not None and s.suggestion.prompt == result.prompt
        assert s.prompt == "a lighthouse at dusk", "a suggestion is not applied until Use"
        s = await h.svc.apply_suggestion(s.id, "alice")
        assert s.prompt == result.prompt and s.suggestion is None
        assert len(await h.db.intent(s.id)) == 1
        await h.svc.advance(s.id, "alice")
        nxt = await h.current_done(s.id)
        assert all(im.image.prompt == result.prompt for im in nxt.images), "the next stage uses the new prompt"
        s = await h.svc.apply_suggestion(s.id, "alice", prompt="a lighthouse, storm", negative="people")
        assert (s.prompt, s.negative_prompt) == ("a lighthouse, storm", "people")
        s = await h.svc.undo(s.id, "alice")
        assert s.prompt == result.prompt
        s = await h.svc.undo(s.id, "alice")
        assert s.prompt == "a lighthouse at dusk"
        assert await h.db.intent(s.id) == []
        with pytest.raises(InvalidState):
            await h.svc.undo(s.id, "alice")
        await h.svc.refine(s.id, "alice", "more clouds")
        await h.svc.discard_suggestion(s.id, "alice")
        assert (await h.svc.session(s.id)).suggestion is None
