"""
SessionService: the facade the bot and the terminal call to run funnel sessions.

Every state change goes through `state.transition`; every row through db.py. A stage's batch id
is its stage id, so a stage and its jobs are tied together before anything runs, and a restart
finds them again. Flow-specific state lives in the JSON `data` of the session and stage rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.db import Database, SessionRow, StageRow
from orchestrator.errors import ImGenError, InputError, InvalidState, LimitExceeded, NotAllowed, SessionNotFound
from orchestrator.events import (
    BatchDone,
    Event,
    EventBus,
    SessionChanged,
    SessionEnded,
    StageDone,
    StageStarted,
    Subscription,
    VotesChanged,
)
from orchestrator.llm.changes import ImageRef4Llm, IntentEntry, RefineRequest, RefineResult
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.models import Family, ImageRecord, JobSpec, JobStatus, LoraSpec
from orchestrator.scheduler import Scheduler
from orchestrator.sessions import concept
from orchestrator.sessions.models import (
    Flow,
    ImageInfo,
    Role,
    Session,
    SessionSettings,
    SessionState,
    StageImage,
    StageStatus,
    StageView,
    Suggestion,
    Visibility,
    VoteResult,
)
from orchestrator.sessions.planner import (
    FINAL,
    ROUND,
    STAGE,
    UPSCALE,
    Planner,
    aspect_of,
    check_loras,
    guess_family,
)
from orchestrator.sessions.state import Action, require, transition
from orchestrator.sessions.syntax import MAX_SEED, expand, parse_aspect, parse_prompt
from orchestrator.sessions.views import image_info, session_of, stage_view
from orchestrator.sessions.voting import allocate, distinct_voters, rank_selection, rejected
from orchestrator.store import ImageStore

log = logging.getLogger(__name__)

LIVE_STATES = (SessionState.GENERATING, SessionState.VOTING, SessionState.FINISHED)


class SessionService:
    """Creates, advances and persists funnel sessions; listens to the scheduler for its stages' batches."""

    def __init__(
        self,
        *,
        db: Database,
        scheduler: Scheduler,
        store: ImageStore,
        bus: EventBus,
        settings: Settings,
        pipeline: FeedbackPipeline | None = None,
    ) -> None:
        self.db = db
        self.scheduler = scheduler
        self.store = store
        self.bus = bus
        self.settings = settings
        self.pipeline = pipeline if pipeline is not None else FeedbackPipeline(settings.llm)
        self._locks: dict[str, asyncio.Lock] = {}
        self._sub: Subscription | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._timers: dict[str, asyncio.Task[None]] = {}
        self.planner = Planner(db, settings)
        self._rng = random.SystemRandom()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Listen for stage batches, then resume sessions left by a previous process."""
        self._sub = self.bus.subscribe(maxsize=10_000, accept=_is_stage_batch)
        self._pump_task = asyncio.create_task(self._pump(self._sub), name="sessions-pump")
        for row in await self.db.sessions_in_states([s.value for s in LIVE_STATES]):
            async with self._lock(row.id):
                await self._resume(row.id)

    async def stop(self) -> None:
        """Cancel the listener and every deadline timer; sessions stay in the DB as they are."""
        if self._sub is not None:
            self._sub.close()
        tasks = [t for t in (self._pump_task, *self._timers.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._timers.clear()
        self._pump_task = None

    async def _pump(self, sub: Subscription) -> None:
        async for ev in sub:
            assert isinstance(ev, BatchDone) and ev.session_id and ev.stage_id
            try:
                async with self._lock(ev.session_id):
                    row = await self._row(ev.session_id)
                    st = await self.db.get_stage(ev.stage_id)
                    if st is not None and st.status == StageStatus.GENERATING:
                        await self._complete(row, st)
            except Exception:
                log.exception("session=%s stage=%s: handling its finished batch failed", ev.session_id, ev.stage_id)

    async def _resume(self, session_id: str) -> None:
        row = await self._row(session_id)
        st = await self._current(row)
        if st is None:
            return
        if st.status == StageStatus.GENERATING:
            jobs = await self.db.stage_jobs(st.id)
            if not jobs:
                # Stopped between writing the stage and queueing its jobs: plan it again.
                await self._replan(row, st)
            elif all(j.status.terminal for j in jobs):
                await self._complete(row, st)
        elif st.status == StageStatus.VOTING and row.state == SessionState.VOTING:
            self._arm_deadline(row, st)
        log.info("resumed session=%s stage=%s (%s)", row.id, st.name, st.status)

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    # ------------------------------------------------------------------ create

    async def create(
        self,
        flow: Flow,
        owner_id: str,
        prompt: str,
        *,
        negative: str | None = None,
        family: Family | None = None,
        count: int | None = None,
        aspect: str | None = None,
        private: bool = False,
        image_path: Path | None = None,
        fields: Mapping[str, str] | None = None,
        checkpoint: str | None = None,
        loras: Sequence[LoraSpec] = (),
    ) -> Session:
        """Start a session: flags in `prompt` are parsed (keyword arguments win) and the first stage queued."""
        # `checkpoint` serves the stages of the session's family (guessed from the checkpoint's name when no family
        # is given); `loras` every sampling stage. An Explorer from an image may have an empty prompt: it takes the
        # image's own prompt when the image is one of ours, else none (its rounds are then all img2img).
        flow = Flow(flow)
        lim = self.settings.limits
        from_image = flow is Flow.EXPLORER and image_path is not None
        flags = parse_prompt(prompt, lim, allow_empty=from_image)
        if from_image and not flags.prompt and image_path is not None:
            ours = await self._our_image(image_path)
            if ours is not None:
                image, ours_family = ours
                flags = dataclasses.replace(flags, prompt=image.prompt)
                negative = negative if negative is not None else (flags.negative or image.negative_prompt)
                family = family or flags.family or ours_family
        family = family or flags.family
        checkpoint = (checkpoint or "").strip() or None
        if checkpoint is not None and family is None:
            family = guess_family(checkpoint, self.settings.checkpoints)
            if family is None:
                accepted = ", ".join(f.value for f in Family)
                raise InputError(
                    "checkpoint family",
                    user_message=f"Which model family is `{checkpoint}`? Give the family too ({accepted}).",
                )
        lora_specs = check_loras(loras)
        if count is not None and not 1 <= count <= lim.max_count:
            raise InputError("count", user_message=f"Count must be between 1 and {lim.max_count}.")
        if aspect is not None:
            w, h = parse_aspect(aspect)
            aspect = f"{w}:{h}"
        if fields and flow is not Flow.CONCEPT:
            raise InputError("fields", user_message="Fields are for the Concept Builder only.")
        ss = SessionSettings(
            family=family,
            aspect=aspect or flags.aspect or "1:1",
            count=count or flags.count,
            seed=flags.seed,
            steps=flags.steps,
            checkpoint=checkpoint,
            loras=lora_specs,
        )
        expand(flags.prompt, limit=lim.max_count)  # refuse too many permutations now, not at the next stage
        await self._check_session_limit(owner_id)
        session_id = uuid.uuid4().hex
        now = time.time()
        data: dict[str, Any] = {"history": []}
        text = flags.prompt
        if flow is Flow.CONCEPT:
            locked = concept.clean_fields(fields or {})
            locked.setdefault("subject", concept.clean_value(flags.prompt))
            data["concept"] = {"locked": locked, "field": None}
            text = concept.compose(locked)
        row = SessionRow(
            id=session_id,
            flow=flow.value,
            owner_id=owner_id,
            visibility=(Visibility.PRIVATE if private else Visibility.OPEN).value,
            state=SessionState.VOTING.value,
            prompt=text,
            negative_prompt=negative if negative is not None else (flags.negative or ""),
            settings=ss.to_dict(),
            stage_index=0,
            data=data,
            created_at=now,
            updated_at=now,
        )
        init = await self._import_image(session_id, image_path) if image_path is not None else None
        if flow is Flow.DRAFT_GRID:
            first = self.settings.funnel.stages[0]
            prepared = await self._prepare(row, STAGE, 0, first.name, {"parents": [], "init_image": init})
        elif flow is Flow.CONCEPT:
            prepared = await self._prepare_concept(row, dict(data["concept"]["locked"]), 0)
            row = prepared.row
        else:
            pick: dict[str, Any] | None = None
            if init is not None:
                # A user's image: its own shape, unless the user asked for another aspect.
                ar = ss.aspect if (aspect or flags.aspect) else aspect_of(*await self._image_size(init))
                ss = ss.with_(aspect=ar)
                row = dataclasses.replace(row, settings=ss.to_dict())
                pick = {"path": init, "prompt": text, "family": (ss.family or Family.SDXL).value}
                pick |= {"seed": self._seed(), "aspect": ar, "image_id": None}
                if ss.family is None:
                    ss = ss.with_(family=Family.SDXL)
                    row = dataclasses.replace(row, settings=ss.to_dict())
            row = dataclasses.replace(row, data={**row.data, "pick": pick})
            prepared = await self._prepare(row, ROUND, 0, "round 1", {"pick": pick})
        await self.db.insert_session(row)
        await self.db.add_participant(session_id, owner_id, Role.OWNER.value)
        row = await self._commit(row, prepared)
        log.info("session=%s created flow=%s owner=%s", session_id, flow.value, owner_id)
        return await session_of(self.db, row)

    async def _import_image(self, session_id: str, path: Path) -> str:
        """Copy a user's image into the data directory (the scheduler uploads it from there)."""
        if not path.is_file():
            raise InputError("no such image", user_message=f"There is no image file at {path.name}.")
        dest = self.settings.storage.data_dir / "inputs" / f"{session_id}{path.suffix.lower() or '.png'}"

        def copy() -> None:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError):
                raise InputError("not an image", user_message=f"{path.name} is not an image.") from None
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)

        await asyncio.to_thread(copy)
        return str(dest)

    async def _our_image(self, path: Path) -> tuple[ImageRecord, Family] | None:
        """The delivered image stored at `path` (its file name is its id) with its family, if it is one of ours."""
        image = await self.db.image(path.stem)
        if image is None or not image.path or Path(image.path).resolve() != path.resolve():
            return None
        job = await self.db.get_job(image.id)
        return image, (job.params.family if job else Family.SDXL)

    async def _image_size(self, path: str) -> tuple[int, int]:
        def size() -> tuple[int, int]:
            from PIL import Image

            with Image.open(path) as im:
                return im.width, im.height

        return await asyncio.to_thread(size)

    # ------------------------------------------------------------------ reading

    async def get(self, session_id: str) -> Session:
        """The session as it is now."""
        return await session_of(self.db, await self._row(session_id))

    async def current_stage(self, session_id: str) -> StageView:
        """The session's current stage or round."""
        row = await self._row(session_id)
        st = await self._current(row)
        if st is None:
            raise InvalidState("no stage", user_message="This session has no stage yet.")
        return await stage_view(self.db, st)

    async def stage(self, stage_id: str) -> StageView:
        """Any stage by id."""
        st = await self.db.get_stage(stage_id)
        if st is None:
            raise SessionNotFound(f"stage {stage_id}", user_message="That stage no longer exists.")
        return await stage_view(self.db, st)

    async def image_info(self, image_id: str) -> ImageInfo:
        """Prompt, seed, node, time, size, checkpoint and ancestors of a delivered image."""
        return await image_info(self.db, image_id)

    async def active_sessions(self) -> list[Session]:
        """Sessions still generating or voting."""
        rows = await self.db.sessions_in_states([SessionState.GENERATING.value, SessionState.VOTING.value])
        return [await session_of(self.db, r) for r in rows]

    # ------------------------------------------------------------------ permissions

    def may_vote(self, session: Session, user_id: str) -> bool:
        """Open sessions: anyone; private ones: the owner and invited members."""
        if session.visibility is Visibility.OPEN:
            return True
        return session.role_of(user_id) in (Role.OWNER, Role.INVITED)

    def may_advance(self, session: Session, user_id: str) -> bool:
        """The owner, or anyone in an open session."""
        return user_id == session.owner_id or session.visibility is Visibility.OPEN

    def _check_vote(self, session: Session, user_id: str) -> None:
        if session.state is SessionState.ENDED:
            raise InvalidState("ended", user_message="This session has ended.")
        if not self.may_vote(session, user_id):
            raise NotAllowed(
                f"user {user_id} may not vote in private session {session.id}",
                user_message=f"This is a private session: ask <@{session.owner_id}> for an invite.",
            )

    def _check_advance(self, session: Session, user_id: str) -> None:
        if not self.may_advance(session, user_id):
            raise NotAllowed(
                f"user {user_id} may not advance session {session.id}",
                user_message="Only the owner can continue this session.",
            )

    def _check_owner(self, session: Session, user_id: str, what: str) -> None:
        if user_id != session.owner_id:
            raise NotAllowed(f"user {user_id} is not the owner", user_message=f"Only the owner can {what}.")

    # ------------------------------------------------------------------ votes

    async def vote(self, session_id: str, image_id: str, user_id: str, value: int | None) -> VoteResult:
        """Select (+1), reject (-1) or withdraw (None) one person's vote on an image of the current stage."""
        return await self._vote(session_id, image_id, user_id, value, toggle=False)

    async def toggle(self, session_id: str, image_id: str, user_id: str, value: int) -> VoteResult:
        """Press Select (or Reject) once to vote, twice to withdraw."""
        return await self._vote(session_id, image_id, user_id, value, toggle=True)

    async def _vote(
        self, session_id: str, image_id: str, user_id: str, value: int | None, *, toggle: bool
    ) -> VoteResult:
        if value not in (1, -1, None) or (toggle and value is None):
            raise InputError("vote value", user_message="A vote is select (+1), reject (-1) or none.")
        async with self._lock(session_id):
            if toggle and await self.db.get_vote(image_id, user_id) == value:
                value = None  # read under the lock, so two quick presses cannot both count as "first"
            row = await self._row(session_id)
            session = await session_of(self.db, row)
            self._check_vote(session, user_id)
            st = await self._current(row)
            image = await self.db.image(image_id)
            if st is None or image is None or image.stage_id != st.id:
                raise InvalidState("not in current stage", user_message="That image is not in the current stage.")
            if st.status not in (StageStatus.GENERATING, StageStatus.VOTING):
                raise InvalidState("stage closed", user_message="Voting on this stage is closed.")
            if user_id not in session.participants:
                await self.db.add_participant(session_id, user_id, Role.VOTER.value)
            await self.db.set_vote(session_id, image_id, user_id, value)
            view = await stage_view(self.db, st)
            shown = view.image(image.index)
            tally = shown.tally if shown else 0
            self.bus.publish(VotesChanged(session_id, st.id, image_id, tally))
            result = VoteResult(session_id, st.id, image_id, image.index, tally, value, view.selection)
            if row.state == SessionState.VOTING:
                await self._maybe_quorum(row, st)
        return result

    async def _maybe_quorum(self, row: SessionRow, st: StageRow) -> None:
        quorum = SessionSettings.from_dict(row.settings).quorum
        if not quorum or st.status != StageStatus.VOTING:
            return
        images = await self.db.stage_images(st.id)
        votes = await self.db.votes_for_images([im.id for im in images])
        if distinct_voters(votes) < quorum:
            return
        try:
            await self._advance_locked(row)
            log.info("session=%s advanced by quorum of %d", row.id, quorum)
        except InvalidState as e:
            log.info("session=%s quorum reached but not advancing: %s", row.id, e.user_message)

    # ------------------------------------------------------------------ moving through the funnel

    async def advance(self, session_id: str, user_id: str) -> StageView:
        """Next stage from the selection (Concept Builder / Explorer: pick the best-voted image)."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_advance(await session_of(self.db, row), user_id)
            require(SessionState(row.state), SessionState.VOTING)
            row = await self._advance_locked(row)
            return await self._current_view(row)

    async def _advance_locked(self, row: SessionRow) -> SessionRow:
        st = await self._need_current(row)
        view = await stage_view(self.db, st)
        if not view.selection:
            raise InvalidState(
                "empty selection", user_message="Nothing is selected: select at least one image before continuing."
            )
        if Flow(row.flow) is not Flow.DRAFT_GRID:
            best = view.image(view.selection[0])
            assert best is not None
            return await self._pick_locked(row, st, best.image)
        stages = self.settings.funnel.stages
        if st.data.get("kind") != STAGE or st.idx + 1 >= len(stages):
            raise InvalidState("last stage", user_message="This is the final stage: upscale the image or end.")
        recipe = stages[st.idx + 1]
        ranked = [im for n in view.selection if (im := view.image(n)) is not None]
        shares = allocate(recipe.count, [(im.image.id, im.tally) for im in ranked])
        parents = [[im.image.id, shares[im.image.id]] for im in ranked if im.image.id in shares]
        prepared = await self._prepare(row, STAGE, st.idx + 1, recipe.name, {"parents": parents, "prev": st.id})
        row = await self._commit(row, prepared)
        await self._close(st, StageStatus.DONE)
        if self.settings.funnel.prune_unselected:
            await self._prune(view)
        return row

    async def regenerate(self, session_id: str, user_id: str) -> StageView:
        """Run the current stage again with new seeds (and the current prompt)."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_advance(await session_of(self.db, row), user_id)
            require(SessionState(row.state), SessionState.GENERATING, SessionState.VOTING)
            st = await self._need_current(row)
            row = await self._replan(row, st)
            return await self._current_view(row)

    async def _replan(self, row: SessionRow, st: StageRow) -> SessionRow:
        data = {k: v for k, v in st.data.items() if k not in ("seed", "deadline_at", "labels")}
        unfinished = sum(1 for j in await self.db.stage_jobs(st.id) if not j.status.terminal)
        prepared = await self._prepare(row, str(st.data.get("kind")), st.idx, st.name, data, replacing=unfinished)
        await self._close(st, StageStatus.CANCELLED)
        return await self._commit(row, prepared)

    async def back(self, session_id: str, user_id: str) -> StageView:
        """Make the previous stage current again, with its images and votes."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_advance(await session_of(self.db, row), user_id)
            st = await self._need_current(row)
            prev_id = st.data.get("prev")
            prev = await self.db.get_stage(prev_id) if prev_id else None
            if prev is None:
                raise InvalidState("first stage", user_message="This is the first stage; there is nothing before it.")
            state = transition(SessionState(row.state), Action.BACK)
            await self._close(st, StageStatus.CANCELLED)
            prev = dataclasses.replace(prev, status=StageStatus.VOTING.value)
            await self.db.update_stage(prev)
            snapshot = dict(prev.data.get("session_data") or {})
            data = {**row.data, **snapshot, "stage_id": prev.id, "stage_name": prev.name}
            row = dataclasses.replace(row, state=state.value, stage_index=prev.idx, data=data)
            if Flow(row.flow) is Flow.CONCEPT:
                row = dataclasses.replace(row, prompt=concept.compose(data["concept"]["locked"]))
            await self.db.update_session(row)
            self._cancel_timer(row.id)
            self.bus.publish(SessionChanged(row.id, "stage"))
            log.info("session=%s back to stage %s", row.id, prev.name)
            return await stage_view(self.db, prev)

    async def end(self, session_id: str, user_id: str) -> Session:
        """End the session (owner only); a stage still rendering is cancelled."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_owner(await session_of(self.db, row), user_id, "end this session")
            state = transition(SessionState(row.state), Action.END)
            st = await self._current(row)
            if st is not None and st.status == StageStatus.GENERATING:
                await self._close(st, StageStatus.CANCELLED)
            row = dataclasses.replace(row, state=state.value, data={**row.data, "ended_reason": "ended by the owner"})
            await self.db.update_session(row)
            self._cancel_timer(row.id)
            self.bus.publish(SessionEnded(row.id, "ended by the owner"))
            log.info("session=%s ended by %s", row.id, user_id)
            return await session_of(self.db, row)

    async def invite(self, session_id: str, by_user: str, user_id: str) -> Session:
        """Let someone vote in a private session (owner only)."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            session = await session_of(self.db, row)
            self._check_owner(session, by_user, "invite people")
            if session.state is SessionState.ENDED:
                raise InvalidState("ended", user_message="This session has ended.")
            if user_id != row.owner_id:
                await self.db.add_participant(session_id, user_id, Role.INVITED.value)
            self.bus.publish(SessionChanged(session_id, "participants"))
            return await session_of(self.db, row)

    async def set_visibility(self, session_id: str, by_user: str, visibility: Visibility) -> Session:
        """Open or close the session to everyone (owner only)."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_owner(await session_of(self.db, row), by_user, "change who may vote")
            row = dataclasses.replace(row, visibility=Visibility(visibility).value)
            await self.db.update_session(row)
            self.bus.publish(SessionChanged(session_id, "visibility"))
            return await session_of(self.db, row)

    async def set_rules(
        self, session_id: str, by_user: str, *, quorum: int | None = None, deadline_s: float | None = None
    ) -> Session:
        """Advance automatically once `quorum` people voted, or `deadline_s` after a stage opens (owner only)."""
        if quorum is not None and quorum < 1:
            raise InputError("quorum", user_message="The quorum is at least 1 voter.")
        if deadline_s is not None and deadline_s <= 0:
            raise InputError("deadline", user_message="The deadline is a positive number of seconds.")
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_owner(await session_of(self.db, row), by_user, "change the voting rules")
            ss = SessionSettings.from_dict(row.settings).with_(quorum=quorum, deadline_s=deadline_s)
            row = dataclasses.replace(row, settings=ss.to_dict())
            await self.db.update_session(row)
            self._cancel_timer(row.id)
            st = await self._current(row)
            if st is not None and st.status == StageStatus.VOTING and row.state == SessionState.VOTING:
                # The stage is already open: the deadline counts from now, and the quorum may already be met.
                data = {k: v for k, v in st.data.items() if k != "deadline_at"}
                if deadline_s:
                    data["deadline_at"] = time.time() + deadline_s
                st = dataclasses.replace(st, data=data)
                await self.db.update_stage(st)
                self._arm_deadline(row, st)
                await self._maybe_quorum(row, st)
            self.bus.publish(SessionChanged(session_id, "rules"))
            return await session_of(self.db, await self._row(session_id))

    # ------------------------------------------------------------------ feedback

    async def refine(self, session_id: str, user_id: str, feedback: str) -> RefineResult:
        """Turn feedback into a suggested prompt (kept pending, not applied) using the current votes."""
        row = await self._row(session_id)
        session = await session_of(self.db, row)
        self._check_vote(session, user_id)
        if not feedback.strip():
            raise InputError("empty feedback", user_message="The feedback is empty.")
        st = await self._current(row)
        view = await stage_view(self.db, st) if st is not None else None
        refs = [_ref4llm(im) for im in view.images] if view else []
        by_number = {r.number: r for r in refs}
        tallies = {im.number: im.tally for im in view.images} if view else {}
        family = self.planner.family_of(row, st)
        request = RefineRequest(
            prompt=row.prompt,
            negative_prompt=row.negative_prompt,
            feedback=feedback,
            family=family,
            selected=tuple(by_number[n] for n in rank_selection(tallies)),
            rejected=tuple(by_number[n] for n in rejected(tallies)),
            stage_images=tuple(refs),
            intent=tuple(IntentEntry.from_dict(d) for d in await self.db.intent(session_id)),
        )
        result = await self.pipeline.refine(request)
        entry = result.intent_entry(request, time.time())
        suggestion = Suggestion(
            prompt=result.prompt,
            negative_prompt=result.negative_prompt,
            rationale=result.rationale,
            source=str(result.source),
            feedback=feedback,
            by_user=user_id,
        )
        async with self._lock(session_id):
            row = await self._row(session_id)
            data = {**row.data, "suggestion": suggestion.to_dict(), "suggestion_entry": entry.to_dict()}
            row = dataclasses.replace(row, data=data)
            await self.db.update_session(row)
        self.bus.publish(SessionChanged(session_id, "suggestion"))
        return result

    async def apply_suggestion(
        self, session_id: str, user_id: str, prompt: str | None = None, negative: str | None = None
    ) -> Session:
        """Use the pending suggestion (or the user's edit of it) as the prompt of the next stage."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            session = await session_of(self.db, row)
            self._check_advance(session, user_id)
            require(session.state, SessionState.GENERATING, SessionState.VOTING, SessionState.FINISHED)
            pending = session.suggestion
            if prompt is None and pending is None:
                raise InvalidState("no suggestion", user_message="There is no suggestion to use.")
            new_prompt = " ".join((prompt if prompt is not None else pending.prompt).split())  # type: ignore[union-attr]
            if negative is not None:
                new_negative = negative.strip()
            else:
                new_negative = pending.negative_prompt if pending is not None else row.negative_prompt
            if not new_prompt:
                raise InputError("empty prompt", user_message="The prompt is empty.")
            if len(new_prompt) > self.settings.limits.max_prompt_chars:
                raise InputError(
                    "too long", user_message=f"The prompt is over {self.settings.limits.max_prompt_chars} characters."
                )
            expand(new_prompt, limit=self.settings.limits.max_count)
            saved = row.data.get("suggestion_entry") if pending is not None else None
            edited = prompt is not None or negative is not None
            base = IntentEntry.from_dict(saved or {"feedback": "", "rationale": f"edited by {user_id}"})
            entry = dataclasses.replace(
                base,
                old_prompt=row.prompt,
                new_prompt=new_prompt,
                old_negative=row.negative_prompt,
                new_negative=new_negative,
                rationale=base.rationale + (f" (edited by {user_id})" if edited and saved else ""),
                created_at=time.time(),
            )
            await self.db.add_intent(session_id, entry.to_dict())
            history = [*row.data.get("history", []), [row.prompt, row.negative_prompt]]
            data = {**row.data, "history": history, "suggestion": None, "suggestion_entry": None}
            row = dataclasses.replace(row, prompt=new_prompt, negative_prompt=new_negative, data=data)
            await self.db.update_session(row)
            self.bus.publish(SessionChanged(session_id, "prompt"))
            return await session_of(self.db, row)

    async def discard_suggestion(self, session_id: str, user_id: str) -> None:
        """Drop the pending suggestion."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_vote(await session_of(self.db, row), user_id)
            row = dataclasses.replace(row, data={**row.data, "suggestion": None, "suggestion_entry": None})
            await self.db.update_session(row)
            self.bus.publish(SessionChanged(session_id, "suggestion"))

    async def undo(self, session_id: str, user_id: str) -> Session:
        """Go back to the prompt before the last applied suggestion."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_advance(await session_of(self.db, row), user_id)
            history = list(row.data.get("history", []))
            if not history:
                raise InvalidState("nothing to undo", user_message="There is no earlier prompt to go back to.")
            prompt, negative = history.pop()
            await self.db.pop_intent(session_id)
            row = dataclasses.replace(
                row, prompt=prompt, negative_prompt=negative, data={**row.data, "history": history}
            )
            await self.db.update_session(row)
            self.bus.publish(SessionChanged(session_id, "prompt"))
            return await session_of(self.db, row)

    # ------------------------------------------------------------------ Concept Builder and Explorer

    async def concept_set_field(self, session_id: str, user_id: str, value: str) -> StageView:
        """Lock the current Concept Builder field with the user's own value and move to the next field."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_advance(await session_of(self.db, row), user_id)
            if Flow(row.flow) is not Flow.CONCEPT:
                raise InvalidState("not concept", user_message="Only the Concept Builder has fields.")
            require(SessionState(row.state), SessionState.GENERATING, SessionState.VOTING)
            field = row.data["concept"].get("field")
            if field is None:
                raise InvalidState("no field", user_message="Every field is already chosen.")
            text = concept.clean_value(value)
            if not text:
                raise InputError("empty", user_message="The value is empty.")
            st = await self._need_current(row)
            row = await self._lock_field(row, st, field, text)
            return await self._current_view(row)

    async def pick(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Concept Builder: lock the field from that image's option; Explorer: next round around that image."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_advance(await session_of(self.db, row), user_id)
            if Flow(row.flow) is Flow.DRAFT_GRID:
                raise InvalidState("pick", user_message="In a Draft Grid, select images and press Continue.")
            require(SessionState(row.state), SessionState.VOTING)
            st = await self._need_current(row)
            image = await self.db.image(image_id)
            if image is None or image.session_id != row.id:
                raise InvalidState("not here", user_message="That image is not part of this session.")
            row = await self._pick_locked(row, st, image)
            return await self._current_view(row)

    async def _pick_locked(self, row: SessionRow, st: StageRow, image: ImageRecord) -> SessionRow:
        if Flow(row.flow) is Flow.CONCEPT:
            if image.stage_id != st.id or st.data.get("kind") != ROUND:
                raise InvalidState("not this round", user_message="Pick one of this round's images.")
            option = st.data["options"][image.index - 1]
            return await self._lock_field(row, st, st.data["field"], option)
        if not image.path:
            raise InvalidState("pruned", user_message="That image's full-size file was pruned; pick another.")
        job = await self.db.get_job(image.id)
        family = job.params.family if job else Family.SDXL
        pick = {
            "path": image.path,
            "prompt": image.prompt,
            "family": family.value,
            "seed": image.seed,
            "aspect": aspect_of(image.width, image.height),
            "image_id": image.id,
        }
        # A session led by an image alone keeps its empty prompt: a picked style variation's text is only the style.
        prompt = image.prompt if row.prompt else ""
        pick["prompt"] = prompt
        row = dataclasses.replace(row, prompt=prompt, data={**row.data, "pick": pick})
        name = f"round {st.idx + 2}"
        prepared = await self._prepare(row, ROUND, st.idx + 1, name, {"pick": pick, "prev": st.id})
        row = await self._commit(row, prepared)
        await self._close(st, StageStatus.DONE)
        return row

    async def _lock_field(self, row: SessionRow, st: StageRow, field: str, value: str) -> SessionRow:
        locked = {**row.data["concept"]["locked"], field: value}
        prepared = await self._prepare_concept(row, locked, st.idx + 1, prev=st.id)
        unfinished = st.status == StageStatus.GENERATING
        row = await self._commit(prepared.row, prepared)
        await self._close(st, StageStatus.CANCELLED if unfinished else StageStatus.DONE)
        return row

    async def _prepare_concept(
        self, row: SessionRow, locked: dict[str, str], idx: int, prev: str | None = None
    ) -> _Prepared:
        field = concept.next_field(locked)
        row = dataclasses.replace(
            row,
            prompt=concept.compose(locked),
            data={**row.data, "concept": {"locked": locked, "field": field}},
        )
        if field is None:
            return await self._prepare(row, FINAL, idx, "final", {"prev": prev})
        ss = SessionSettings.from_dict(row.settings)
        n = ss.count or self.settings.funnel.concept_options
        options, source = await self.pipeline.concept_options(field, locked["subject"], locked, n)
        options = tuple(o for o in options if o)[:n] or (field,)
        data = {"field": field, "options": list(options), "options_source": str(source), "prev": prev}
        return await self._prepare(row, ROUND, idx, field, data)

    async def upscale(self, session_id: str, user_id: str, image_id: str) -> StageView:
        """Upscale any delivered image of the session as a one-image stage."""
        async with self._lock(session_id):
            row = await self._row(session_id)
            self._check_advance(await session_of(self.db, row), user_id)
            require(SessionState(row.state), SessionState.VOTING, SessionState.FINISHED)
            image = await self.db.image(image_id)
            if image is None or image.session_id != row.id:
                raise InvalidState("not here", user_message="That image is not part of this session.")
            st = await self._need_current(row)
            row = await self._start_upscale(row, st, image.id)
            return await self._current_view(row)

    async def _start_upscale(self, row: SessionRow, st: StageRow, image_id: str) -> SessionRow:
        prepared = await self._prepare(row, UPSCALE, st.idx + 1, "upscale", {"image_id": image_id, "prev": st.id})
        row = await self._commit(row, prepared)
        await self._close(st, StageStatus.DONE)
        return row

    async def variations(self, user_id: str, image_id: str) -> Session:
        """A new Explorer session around an image."""
        image = await self.db.image(image_id)
        job = await self.db.get_job(image_id)
        if image is None or job is None:
            raise InvalidState("no image", user_message="That image does not exist or is not finished yet.")
        if image.session_id is not None:
            self._check_vote(await self.get(image.session_id), user_id)
        if not image.path:
            raise InvalidState("pruned", user_message="That image's full-size file was pruned.")
        await self._check_session_limit(user_id)
        # The user's checkpoint and LoRAs carry over (the checkpoint only while the family is the same).
        src = SessionSettings.from_dict((await self._row(image.session_id)).settings) if image.session_id else None
        ss = SessionSettings(
            family=job.params.family,
            aspect=aspect_of(image.width, image.height),
            checkpoint=src.checkpoint if src is not None and src.family is job.params.family else None,
            loras=src.loras if src is not None else (),
        )
        pick = {
            "path": image.path,
            "prompt": image.prompt,
            "family": job.params.family.value,
            "seed": image.seed,
            "aspect": ss.aspect,
            "image_id": image.id,
        }
        return await self._new_session(
            Flow.EXPLORER, user_id, image.prompt, image.negative_prompt, ss, ROUND, 0, "round 1", {"pick": pick}
        )

    async def branch(self, session_id: str, user_id: str, image_id: str) -> Session:
        """A new Draft Grid that continues from that image: the next stage's images all grow from it."""
        source = await self._row(session_id)
        self._check_vote(await session_of(self.db, source), user_id)
        image = await self.db.image(image_id)
        if image is None or image.session_id != session_id:
            raise InvalidState("not here", user_message="That image is not part of this session.")
        if not image.path:
            raise InvalidState("pruned", user_message="That image's full-size file was pruned.")
        await self._check_session_limit(user_id)
        st = await self.db.get_stage(image.stage_id) if image.stage_id else None
        stages = self.settings.funnel.stages
        from_recipe = Flow(source.flow) is Flow.DRAFT_GRID and st is not None and st.data.get("kind") == STAGE
        idx = min(st.idx + 1 if from_recipe and st is not None else 1, len(stages) - 1)
        recipe = stages[idx]
        ss = SessionSettings.from_dict(source.settings).with_(quorum=None, deadline_s=None)
        data = {"parents": [[image.id, recipe.count]]}
        return await self._new_session(
            Flow.DRAFT_GRID, user_id, source.prompt, source.negative_prompt, ss, STAGE, idx, recipe.name, data
        )

    async def _new_session(
        self,
        flow: Flow,
        owner_id: str,
        prompt: str,
        negative: str,
        ss: SessionSettings,
        kind: str,
        idx: int,
        name: str,
        stage_data: dict[str, Any],
    ) -> Session:
        now = time.time()
        data: dict[str, Any] = {"history": []}
        if "pick" in stage_data:
            data["pick"] = stage_data["pick"]
        row = SessionRow(
            uuid.uuid4().hex,
            flow.value,
            owner_id,
            Visibility.OPEN.value,
            SessionState.VOTING.value,
            prompt,
            negative,
            ss.to_dict(),
            idx,
            data,
            now,
            now,
        )
        prepared = await self._prepare(row, kind, idx, name, stage_data)
        await self.db.insert_session(row)
        await self.db.add_participant(row.id, owner_id, Role.OWNER.value)
        row = await self._commit(row, prepared)
        log.info("session=%s created flow=%s owner=%s from an image", row.id, flow.value, owner_id)
        return await session_of(self.db, row)

    # ------------------------------------------------------------------ planning

    async def _prepare(
        self, row: SessionRow, kind: str, idx: int, name: str, data: dict[str, Any], *, replacing: int = 0
    ) -> _Prepared:
        """Plan a stage and check it can run, without writing anything."""
        stage_id = uuid.uuid4().hex
        first = idx == 0 and kind in (STAGE, ROUND) and not data.get("prev")
        ss = SessionSettings.from_dict(row.settings)
        seed = ss.seed if first and ss.seed is not None and "regen" not in data else self._seed()
        data = {
            **data,
            "kind": kind,
            "seed": seed,
            "regen": True,
            "session_data": {"concept": row.data.get("concept"), "pick": row.data.get("pick")},
        }
        specs = await self.planner.specs(row, kind, idx, data, stage_id)
        for spec in specs:
            self.scheduler.check_capable(spec)
        queued = await self.db.queued_images_for_user(row.owner_id) - replacing
        cap = self.settings.limits.max_queued_images_per_user
        if queued + len(specs) > cap:
            raise LimitExceeded(
                "queued images",
                user_message=f"You have {queued} images waiting; {len(specs)} more would pass the limit of {cap}. "
                "Wait for them to finish.",
            )
        st = StageRow(stage_id, row.id, idx, name, StageStatus.GENERATING.value, stage_id, row.prompt,
                      row.negative_prompt, data, time.time())  # fmt: skip
        return _Prepared(row, st, specs)

    async def _commit(self, row: SessionRow, prepared: _Prepared) -> SessionRow:
        """Write the stage, queue its jobs (batch id = stage id) and make it the session's current stage."""
        st = prepared.stage
        state = transition(SessionState(row.state), Action.PLAN)
        await self.db.insert_stage(st)
        await self.scheduler.submit(prepared.specs, batch_id=st.id)
        data = {**row.data, "stage_id": st.id, "stage_name": st.name}
        row = dataclasses.replace(row, state=state.value, stage_index=st.idx, data=data)
        await self.db.update_session(row)
        self._cancel_timer(row.id)
        self.bus.publish(StageStarted(row.id, st.id, st.name, st.idx, len(prepared.specs)))
        log.info("session=%s stage=%s %s: %d images queued", row.id, st.id[:8], st.name, len(prepared.specs))
        return row

    def _seed(self) -> int:
        # Leave room below 2**32 for the per-image offsets of a stage.
        return self._rng.randint(0, MAX_SEED - 1000)

    # ------------------------------------------------------------------ stage completion

    async def _complete(self, row: SessionRow, st: StageRow) -> None:
        """Every job of the stage is terminal: open it for votes (once), then do what the flow does next."""
        jobs = await self.db.stage_jobs(st.id)
        done = sum(1 for j in jobs if j.status is JobStatus.DONE)
        data = dict(st.data)
        ss = SessionSettings.from_dict(row.settings)
        if ss.deadline_s:
            data["deadline_at"] = time.time() + ss.deadline_s
        st = dataclasses.replace(st, status=StageStatus.VOTING.value, data=data)
        await self.db.update_stage(st)
        current = row.data.get("stage_id") == st.id
        then = "vote"
        if current:
            # Decide what follows before announcing the stage, so a front end that reacts to StageDone
            # already reads the finished session (or the final image) from get().
            row = dataclasses.replace(row, state=transition(SessionState(row.state), Action.STAGE_DONE).value)
            if done:
                row, then = await self._after_stage(row, st)
            await self.db.update_session(row)
        self.bus.publish(StageDone(row.id, st.id, st.name, done, len(jobs) - done))
        log.info("session=%s stage=%s %s done=%d failed=%d", row.id, st.id[:8], st.name, done, len(jobs) - done)
        if not current or not done:
            return
        if then == "finished":
            self.bus.publish(SessionEnded(row.id, "finished"))
            log.info("session=%s finished final=%s", row.id, row.data.get("final_image_id"))
        elif then == "final":
            self.bus.publish(SessionChanged(row.id, "final"))
        elif then == "upscale":
            try:
                await self._start_upscale(row, st, str(row.data["final_image_id"]))
            except ImGenError as e:
                log.warning("session=%s final upscale not possible: %s", row.id, e.user_message)
                row = dataclasses.replace(row, state=transition(SessionState(row.state), Action.FINISH).value)
                await self.db.update_session(row)
                self.bus.publish(SessionEnded(row.id, "finished"))
        else:
            await self._maybe_quorum(row, st)
            refreshed = await self._row(row.id)
            if refreshed.data.get("stage_id") == st.id:
                self._arm_deadline(refreshed, st)

    async def _after_stage(self, row: SessionRow, st: StageRow) -> tuple[SessionRow, str]:
        """What a delivered current stage leads to: "vote", "upscale" (of the final), "final" or "finished"."""
        kind = st.data.get("kind")
        flow = Flow(row.flow)
        last_recipe = kind == STAGE and st.idx == len(self.settings.funnel.stages) - 1
        final = (flow is Flow.DRAFT_GRID and last_recipe) or (flow is Flow.CONCEPT and kind == FINAL)
        if not (kind == UPSCALE or final):
            return row, "vote"
        images = await self.db.stage_images(st.id)
        row = dataclasses.replace(row, data={**row.data, "final_image_id": images[0].id})
        if kind != UPSCALE and self.settings.funnel.final_upscale:
            return row, "upscale"
        if flow is Flow.EXPLORER:
            return row, "final"
        return dataclasses.replace(row, state=transition(SessionState(row.state), Action.FINISH).value), "finished"

    async def _close(self, st: StageRow, status: StageStatus) -> None:
        """Leave a stage: DONE keeps it as history; CANCELLED also cancels its unfinished jobs."""
        fresh = await self.db.get_stage(st.id) or st
        was_generating = fresh.status == StageStatus.GENERATING
        await self.db.update_stage(dataclasses.replace(fresh, status=status.value))
        if was_generating:
            # The stage is marked first, so the BatchDone its cancellation causes is ignored.
            await self.scheduler.cancel_batch(st.batch_id or st.id)

    async def _prune(self, view: StageView) -> None:
        chosen = set(view.selection)
        drop = [im.image for im in view.images if im.number not in chosen and im.image.path]
        if not drop:
            return
        await self.store.prune([Path(im.path) for im in drop])
        for im in drop:
            await self.db.clear_image_path(im.id)
        log.info("stage=%s pruned %d unselected images", view.id[:8], len(drop))

    # ------------------------------------------------------------------ deadlines

    def _arm_deadline(self, row: SessionRow, st: StageRow) -> None:
        at = st.data.get("deadline_at")
        if at is None:
            return
        self._cancel_timer(row.id)
        self._timers[row.id] = asyncio.create_task(self._deadline(row.id, st.id, float(at)), name=f"deadline-{row.id}")

    def _cancel_timer(self, session_id: str) -> None:
        task = self._timers.pop(session_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _deadline(self, session_id: str, stage_id: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        async with self._lock(session_id):
            if self._timers.get(session_id) is asyncio.current_task():
                del self._timers[session_id]
            row = await self._row(session_id)
            if row.data.get("stage_id") != stage_id or row.state != SessionState.VOTING:
                return
            try:
                await self._advance_locked(row)
                log.info("session=%s advanced at its deadline", session_id)
            except ImGenError as e:
                log.info("session=%s deadline passed, not advancing: %s", session_id, e.user_message)

    # ------------------------------------------------------------------ rows and views

    async def _check_session_limit(self, owner_id: str) -> None:
        cap = self.settings.limits.max_active_sessions_per_user
        active = await self.db.count_user_sessions(owner_id, [SessionState.GENERATING, SessionState.VOTING])
        if active >= cap:
            raise LimitExceeded(
                "too many sessions",
                user_message=f"You already have {active} active sessions (the limit is {cap}); end one first.",
            )

    async def _row(self, session_id: str) -> SessionRow:
        row = await self.db.get_session(session_id)
        if row is None:
            raise SessionNotFound(f"session {session_id}")
        return row

    async def _current(self, row: SessionRow) -> StageRow | None:
        stage_id = row.data.get("stage_id")
        return await self.db.get_stage(stage_id) if stage_id else None

    async def _need_current(self, row: SessionRow) -> StageRow:
        st = await self._current(row)
        if st is None:
            raise InvalidState("no stage", user_message="This session has no stage yet.")
        return st

    async def _current_view(self, row: SessionRow) -> StageView:
        return await stage_view(self.db, await self._need_current(row))


@dataclasses.dataclass(frozen=True, slots=True)
class _Prepared:
    """A planned stage, checked and not yet written."""

    row: SessionRow
    stage: StageRow
    specs: list[JobSpec]


def _is_stage_batch(ev: Event) -> bool:
    return isinstance(ev, BatchDone) and ev.session_id is not None and ev.stage_id is not None


def _ref4llm(im: StageImage) -> ImageRef4Llm:
    path = im.image.path or im.image.thumbnail
    return ImageRef4Llm(number=im.number, path=Path(path) if path else None, prompt=im.image.prompt, seed=im.image.seed)
