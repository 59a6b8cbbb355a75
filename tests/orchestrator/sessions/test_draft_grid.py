"""The Draft Grid end to end on the simulated farm: votes, proportional stages, lineage, upscale, group rules."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.errors import InputError, InvalidState, LimitExceeded, NotAllowed
from orchestrator.events import SessionEnded, StageDone, StageStarted, VotesChanged
from orchestrator.models import Family, Mode
from orchestrator.sessions.models import Flow, Role, SessionRequest, SessionState, StageStatus, Visibility
from tests.orchestrator.sessions.conftest import running, serve, small_config

pytestmark = pytest.mark.timeout(90)


async def test_draft_grid_runs_to_final_with_proportional_counts_and_lineage(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(
            SessionRequest(Flow.DRAFT_GRID, "alice", "a lighthouse at dusk --seed 100 --no text")
        )
        assert s.state is SessionState.GENERATING and s.stage_name == "drafts" and s.negative_prompt == "text"
        drafts = await h.current_done(s.id)
        assert (drafts.name, drafts.total, drafts.delivered, drafts.status) == ("drafts", 6, 6, StageStatus.VOTING)
        assert sorted(im.image.seed for im in drafts.images) == list(range(100, 106))
        one, two, three = (drafts.image(n).image.id for n in (1, 2, 3))
        await h.svc.vote(s.id, one, "alice", 1)
        await h.svc.vote(s.id, one, "bob", 1)
        await h.svc.vote(s.id, two, "bob", 1)
        await h.svc.vote(s.id, three, "carol", -1)
        assert (await h.svc.current_stage(s.id)).selection == (1, 2)

        refined = await h.svc.advance(s.id, "alice")
        assert (refined.name, refined.total, refined.status) == ("refined", 3, StageStatus.GENERATING)
        refined = await h.current_done(s.id)
        parents = [im.image.parent_id for im in refined.images]
        assert parents.count(one) == 2 and parents.count(two) == 1, "3 children split 2:1 by tallies 2:1"
        job = await h.db.get_job(refined.images[0].image.id)
        assert job.params.mode is Mode.IMG2IMG and job.params.denoise == 0.6 and job.params.family is Family.SDXL
        assert (await h.svc.stage(drafts.id)).status is StageStatus.DONE

        for _ in ("polished", "final"):
            cur = await h.svc.current_stage(s.id)
            await h.svc.vote(s.id, cur.images[0].image.id, "alice", 1)
            await h.svc.advance(s.id, "alice")
            await h.current_done(s.id)
        # The final's StageDone starts the upscale by itself; its end finishes the session.
        up = await h.started(s.id, "upscale")
        assert up.total == 1
        await h.stage_done(up.stage_id)
        await h.rec.wait_for(lambda r: any(isinstance(e, SessionEnded) and e.session_id == s.id for e in r.events))
        s = await h.svc.session(s.id)
        assert s.state is SessionState.FINISHED and s.final_image_id is not None
        info = await h.svc.image_info(s.final_image_id)
        parent = await h.db.image(info.parent_id)
        assert info.mode is Mode.UPSCALE and info.width >= parent.width
        assert [link.stage_name for link in info.lineage] == ["drafts", "refined", "polished", "final"]
        assert info.lineage[0].id == one
        names = [e.name for e in h.rec.of(StageStarted) if e.session_id == s.id]
        assert names == ["drafts", "refined", "polished", "final", "upscale"]
        assert len([e for e in h.rec.of(StageDone) if e.session_id == s.id]) == 5


async def test_group_votes_change_withdraw_and_toggle(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox"))
        view = await h.current_done(s.id)
        img = view.images[0].image.id
        r = await h.svc.vote(s.id, img, "alice", 1)
        assert (r.tally, r.value, r.selection) == (1, 1, (1,))
        r = await h.svc.vote(s.id, img, "bob", 1)
        assert r.tally == 2
        r = await h.svc.vote(s.id, img, "bob", -1)  # changed
        assert r.tally == 0 and r.selection == ()
        r = await h.svc.vote(s.id, img, "bob", None)  # withdrawn
        assert r.tally == 1
        r = await h.svc.toggle(s.id, img, "alice", 1)  # second press withdraws
        assert (r.tally, r.value) == (0, None)
        r = await h.svc.toggle(s.id, img, "alice", 1)
        assert (r.tally, r.value) == (1, 1)
        shown = (await h.svc.current_stage(s.id)).image(1)
        assert dict(shown.votes) == {"alice": 1}
        assert (await h.svc.session(s.id)).participants == {"alice": Role.OWNER, "bob": Role.VOTER}
        await h.rec.wait_for(lambda rr: any(isinstance(e, VotesChanged) and e.image_id == img for e in rr.events))
        with pytest.raises(InputError):
            await h.svc.vote(s.id, img, "bob", 2)


async def test_private_session_refuses_outsiders_and_open_lets_anyone_advance(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox", private=True))
        view = await h.current_done(s.id)
        img = view.images[0].image.id
        with pytest.raises(NotAllowed) as e:
            await h.svc.vote(s.id, img, "mallory", 1)
        assert e.value.user_message == "This is a private session: ask <@alice> for an invite."
        assert not h.svc.may_vote(await h.svc.session(s.id), "mallory")
        with pytest.raises(NotAllowed):
            await h.svc.invite(s.id, "mallory", "mallory")
        await h.svc.invite(s.id, "alice", "bob")
        assert (await h.svc.vote(s.id, img, "bob", 1)).tally == 1
        with pytest.raises(NotAllowed) as e:
            await h.svc.advance(s.id, "bob")
        assert e.value.user_message == "Only the owner can continue this session; you can still vote and give feedback."
        s = await h.svc.set_visibility(s.id, "alice", Visibility.OPEN)
        assert h.svc.may_vote(s, "mallory") and h.svc.may_advance(s, "mallory")
        nxt = await h.svc.advance(s.id, "mallory")
        assert nxt.name == "refined"
        with pytest.raises(NotAllowed):
            await h.svc.end(s.id, "mallory")


async def test_advancing_with_nothing_selected_or_while_generating_is_refused(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox"))
        view = await h.svc.current_stage(s.id)
        if view.status is StageStatus.GENERATING:
            with pytest.raises(InvalidState) as e:
                await h.svc.advance(s.id, "alice")
            assert e.value.user_message == "Wait for this stage to finish."
        view = await h.current_done(s.id)
        with pytest.raises(InvalidState) as e:
            await h.svc.advance(s.id, "alice")
        assert "Nothing is selected" in e.value.user_message
        await h.svc.vote(s.id, view.images[0].image.id, "alice", -1)
        with pytest.raises(InvalidState):
            await h.svc.advance(s.id, "alice")


async def test_regenerate_back_and_end(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox --seed 5"))
        drafts = await h.current_done(s.id)
        await h.svc.vote(s.id, drafts.images[1].image.id, "alice", 1)
        again = await h.svc.regenerate(s.id, "alice")
        assert again.id != drafts.id and again.name == "drafts" and again.total == 6
        again = await h.current_done(s.id)
        assert {im.image.seed for im in again.images}.isdisjoint(range(5, 11)), "regenerate draws new seeds"
        assert (await h.svc.stage(drafts.id)).status is StageStatus.CANCELLED
        await h.svc.vote(s.id, again.images[0].image.id, "alice", 1)
        await h.svc.advance(s.id, "alice")
        await h.current_done(s.id)
        back = await h.svc.back(s.id, "alice")
        assert back.id == again.id and back.status is StageStatus.VOTING and back.selection == (1,)
        s2 = await h.svc.session(s.id)
        assert (s2.state, s2.stage_name, s2.stage_index) == (SessionState.VOTING, "drafts", 0)
        with pytest.raises(InvalidState):
            await h.svc.back(s.id, "alice")
        ended = await h.svc.end(s.id, "alice")
        assert ended.state is SessionState.ENDED
        with pytest.raises(InvalidState) as e:
            await h.svc.vote(s.id, again.images[0].image.id, "alice", 1)
        assert e.value.user_message == "This session has ended."


async def test_prompt_flags_and_keyword_arguments(farm):
    async with running(farm) as h:
        s = await h.svc.create_session(
            SessionRequest(
                Flow.DRAFT_GRID, "alice", "a {red,blue} kite --ar 16:9 --count 4 --steps 3 --no text", negative="blur"
            )
        )
        assert s.prompt == "a {red,blue} kite" and s.negative_prompt == "blur", "keyword arguments win over flags"
        view = await h.current_done(s.id)
        assert view.total == 4
        jobs = await h.db.stage_jobs(view.id)
        assert {(j.params.width, j.params.height, j.params.steps) for j in jobs} == {(704, 384, 3)}
        assert [j.params.prompt for j in jobs] == ["a red kite", "a blue kite"] * 2
        with pytest.raises(InputError) as e:
            await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a kite --sharpness 3"))
        assert "Accepted:" in e.value.user_message


async def test_limits_on_sessions_and_queued_images(tmp_path):
    cfg = small_config(tmp_path)
    cfg = cfg.with_settings(
        limits=replace(cfg.settings.limits, max_active_sessions_per_user=1, max_queued_images_per_user=7)
    )
    async with serve(cfg) as bound, running(bound) as h:
        with pytest.raises(LimitExceeded) as e:
            await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox --count 8"))
        assert "limit of 7" in e.value.user_message
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox"))
        with pytest.raises(LimitExceeded) as e:
            await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a cat"))
        assert "end one first" in e.value.user_message
        await h.svc.end(s.id, "alice")
        await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a cat"))


async def test_starts_at_the_same_moment_cannot_pass_the_session_limit_together(tmp_path):
    cfg = small_config(tmp_path)
    cfg = cfg.with_settings(limits=replace(cfg.settings.limits, max_active_sessions_per_user=2))
    async with serve(cfg) as bound, running(bound) as h:
        starts = [h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", f"a fox number {i}")) for i in range(4)]
        results = await asyncio.gather(*starts, return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 2
        assert all(isinstance(r, LimitExceeded) for r in results if isinstance(r, BaseException))


async def test_a_start_refused_after_its_image_was_imported_leaves_no_copy(tmp_path):
    cfg = small_config(tmp_path)  # an Explorer round is 4 images
    cfg = cfg.with_settings(limits=replace(cfg.settings.limits, max_queued_images_per_user=3))
    picture = tmp_path / "mine.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(picture)
    async with serve(cfg) as bound, running(bound) as h:
        with pytest.raises(LimitExceeded):
            await h.svc.create_session(SessionRequest(Flow.EXPLORER, "bob", "a fox", image_path=picture))
        inputs = bound.settings.storage.data_dir / "inputs"
        assert not inputs.exists() or not [p for p in inputs.rglob("*") if p.is_file()]


async def test_prune_unselected_keeps_thumbnails(tmp_path):
    async with serve(small_config(tmp_path, prune_unselected=True)) as bound, running(bound) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox"))
        drafts = await h.current_done(s.id)
        keep = drafts.images[0].image
        await h.svc.vote(s.id, keep.id, "alice", 1)
        await h.svc.advance(s.id, "alice")
        after = await h.svc.stage(drafts.id)
        assert after.image(1).image.path == keep.path and Path(keep.path).exists()
        for im in after.images[1:]:
            assert not im.image.path
            assert Path(im.image.thumbnail).exists()
        assert not Path(drafts.images[1].image.path).exists()


async def test_quorum_advances_by_itself(tmp_path):
    async with serve(small_config(tmp_path)) as bound, running(bound) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox"))
        await h.svc.set_rules(s.id, "alice", quorum=2)
        drafts = await h.current_done(s.id)
        await h.svc.vote(s.id, drafts.images[0].image.id, "alice", 1)
        assert (await h.svc.session(s.id)).stage_name == "drafts"
        await h.svc.vote(s.id, drafts.images[2].image.id, "bob", 1)
        s = await h.svc.session(s.id)
        assert s.stage_name == "refined" and s.state is SessionState.GENERATING


async def test_deadline_advances_by_itself(tmp_path):
    async with serve(small_config(tmp_path)) as bound, running(bound) as h:
        s = await h.svc.create_session(SessionRequest(Flow.DRAFT_GRID, "alice", "a fox"))
        await h.svc.set_rules(s.id, "alice", deadline_s=0.05)
        drafts = await h.current_done(s.id)
        await h.svc.vote(s.id, drafts.images[0].image.id, "alice", 1)
        await h.rec.wait_for(lambda r: any(isinstance(e, StageStarted) and e.name == "refined" for e in r.events))
        assert (await h.svc.session(s.id)).stage_name == "refined"
