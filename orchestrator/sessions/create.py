"""
SessionFactory: starting sessions, each with its first stage queued.

From a prompt (and optionally a user's image, imported into the data directory), as an Explorer around a
delivered image (variations), or as a Draft Grid that continues from one (branch).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from orchestrator.checks import check_count
from orchestrator.errors import InputError, InvalidState, LimitExceeded
from orchestrator.families import guess_family
from orchestrator.models import Family, ImageRecord
from orchestrator.sessions import concept
from orchestrator.sessions.access import check_vote
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.explorer import Pick
from orchestrator.sessions.models import (
    Flow,
    Role,
    Session,
    SessionRequest,
    SessionSettings,
    SessionState,
    StageKind,
    Visibility,
)
from orchestrator.sessions.planner import aspect_of, check_loras
from orchestrator.sessions.records import ConceptData, ParentShare, SessionData, SessionRecord, StageData
from orchestrator.sessions.stages import Prepared, StageWriter
from orchestrator.sessions.syntax import (
    clip_negative,
    expand,
    parse_aspect,
    parse_prompt,
    tidy_negative,
)
from orchestrator.sessions.views import session_of
from orchestrator.uploads import EXTENSIONS, inspect_image, owner_dir

log = logging.getLogger(__name__)


class SessionFactory:
    """Creates sessions and queues their first stage."""

    def __init__(self, ctx: SessionContext, stages: StageWriter) -> None:
        self.ctx = ctx
        self.stages = stages

    async def create(self, req: SessionRequest) -> Session:
        """Start a session: flags in the prompt are parsed (the request's own fields win) and the first stage queued."""
        # The checkpoint serves the stages of the session's family (guessed from the checkpoint's name when no family
        # is given); the LoRAs every sampling stage. An Explorer from an image may have an empty prompt: it takes the
        # image's own prompt when the image is one of ours, else none (its rounds are then all img2img).
        flow, owner_id, prompt, negative, family = req.flow, req.owner_id, req.prompt, req.negative, req.family
        count, aspect, image_path, fields = req.count, req.aspect, req.image_path, req.fields
        settings = self.ctx.settings
        flow = Flow(flow)
        lim = settings.limits
        from_image = flow is Flow.EXPLORER and image_path is not None
        flags = parse_prompt(prompt, lim, allow_empty=from_image)
        if from_image and not flags.prompt and image_path is not None:
            ours = await self._our_image(image_path)
            if ours is not None:
                image, ours_family = ours
                flags = dataclasses.replace(flags, prompt=image.prompt)
                negative = (
                    negative
                    if negative is not None
                    else (flags.negative or clip_negative(image.negative_prompt, lim.max_negative_chars))
                )
                family = family or flags.family or ours_family
        family = family or flags.family
        checkpoint = (req.checkpoint or "").strip() or None
        if checkpoint is not None and family is None:
            family = guess_family(checkpoint, settings.checkpoints)
            if family is None:
                accepted = ", ".join(f.value for f in Family)
                raise InputError(
                    "checkpoint family",
                    user_message=f"Which model family is `{checkpoint}`? Give the family too ({accepted}).",
                )
        lora_specs = check_loras(req.loras)
        if count is not None:
            check_count(count, lim)
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
            server_id=req.server_id,
        )
        expand(flags.prompt, limit=lim.max_count)  # refuse too many permutations now, not at the next stage
        async with self._session_slot(owner_id):
            data = SessionData()
            text = flags.prompt
            locked: dict[str, str] = {}
            if flow is Flow.CONCEPT:
                locked = concept.clean_fields(fields or {})
                locked.setdefault("subject", concept.clean_value(flags.prompt))
                data = data.with_(concept=ConceptData(locked, None))
                text = concept.compose(locked)
            negative = tidy_negative(negative, lim) if negative is not None else (flags.negative or "")
            row = _new_record(flow, owner_id, text, negative, ss, 0, data, private=req.private)
            init = await self._import_image(row.id, owner_id, image_path) if image_path is not None else None
            try:
                if flow is Flow.DRAFT_GRID:
                    first = settings.funnel.stages[0]
                    stage = StageData(StageKind.STAGE, init_image=init)
                    prepared = await self.stages.prepare(row, 0, first.name, stage)
                elif flow is Flow.CONCEPT:
                    prepared = await self.stages.prepare_concept(row, dict(locked), 0)
                    row = prepared.session
                else:
                    pick: Pick | None = None
                    if init is not None:
                        # A user's image: its own shape, unless the user asked for another aspect.
                        ar = ss.aspect if (aspect or flags.aspect) else aspect_of(*await _image_size(init))
                        ss = ss.with_(aspect=ar)
                        pick = Pick(init, text, ss.family or Family.SDXL, self.stages.seed(), ar)
                        if ss.family is None:
                            ss = ss.with_(family=Family.SDXL)
                    row = row.with_(settings=ss, data=row.data.with_(pick=pick))
                    prepared = await self.stages.prepare(row, 0, "round 1", StageData(StageKind.ROUND, pick=pick))
            except BaseException:
                # Refused before anything was written (a limit, no capable GPU): nothing will refer to the copy.
                if init is not None:
                    Path(init).unlink(missing_ok=True)
                raise
            row = await self._insert(row, prepared)
            log.info("session=%s created flow=%s owner=%s", row.id, flow.value, owner_id)
            return await session_of(self.ctx.db, row)

    async def variations(self, user_id: str, image_id: str) -> Session:
        """A new Explorer session around an image."""
        ctx = self.ctx
        image = await ctx.db.image(image_id)
        job = await ctx.db.get_job(image_id)
        if image is None or job is None:
            raise InvalidState("no image", user_message="That image does not exist or is not finished yet.")
        if image.session_id is not None:
            check_vote(await session_of(ctx.db, await ctx.row(image.session_id)), user_id)
        if not image.path:
            raise InvalidState("pruned", user_message="That image's full-size file was pruned.")
        async with self._session_slot(user_id):
            # The user's checkpoint and LoRAs carry over (the checkpoint only while the family is the same).
            src = (await ctx.row(image.session_id)).settings if image.session_id else None
            ss = SessionSettings(
                family=job.params.family,
                aspect=aspect_of(image.width, image.height),
                checkpoint=src.checkpoint if src is not None and src.family is job.params.family else None,
                loras=src.loras if src is not None else (),
                server_id=src.server_id if src is not None else None,
            )
            pick = Pick.of_image(image, job.params.family, ss.aspect)
            data = StageData(StageKind.ROUND, pick=pick)
            return await self._new_session(
                Flow.EXPLORER, user_id, image.prompt, image.negative_prompt, ss, 0, "round 1", data
            )

    async def branch(self, session_id: str, user_id: str, image_id: str) -> Session:
        """A new Draft Grid that continues from that image: the next stage's images all grow from it."""
        ctx = self.ctx
        source = await ctx.row(session_id)
        check_vote(await session_of(ctx.db, source), user_id)
        image = await ctx.db.image(image_id)
        if image is None or image.session_id != session_id:
            raise InvalidState("not here", user_message="That image is not part of this session.")
        if not image.path:
            raise InvalidState("pruned", user_message="That image's full-size file was pruned.")
        async with self._session_slot(user_id):
            st = await ctx.stage(image.stage_id)
            stages = ctx.settings.funnel.stages
            from_recipe = source.flow is Flow.DRAFT_GRID and st is not None and st.kind is StageKind.STAGE
            idx = min(st.idx + 1 if from_recipe and st is not None else 1, len(stages) - 1)
            recipe = stages[idx]
            ss = source.settings.with_(quorum=None, deadline_s=None)
            data = StageData(StageKind.STAGE, parents=(ParentShare(image.id, recipe.count),))
            return await self._new_session(
                Flow.DRAFT_GRID, user_id, source.prompt, source.negative_prompt, ss, idx, recipe.name, data
            )

    async def _new_session(
        self,
        flow: Flow,
        owner_id: str,
        prompt: str,
        negative: str,
        ss: SessionSettings,
        idx: int,
        name: str,
        stage_data: StageData,
    ) -> Session:
        row = _new_record(flow, owner_id, prompt, negative, ss, idx, SessionData(pick=stage_data.pick), private=False)
        prepared = await self.stages.prepare(row, idx, name, stage_data)
        row = await self._insert(row, prepared)
        log.info("session=%s created flow=%s owner=%s from an image", row.id, flow.value, owner_id)
        return await session_of(self.ctx.db, row)

    async def _insert(self, row: SessionRecord, prepared: Prepared) -> SessionRecord:
        """Write the new session and its owner, then its planned first stage."""
        await self.ctx.db.insert_session(row.to_row())
        await self.ctx.db.add_participant(row.id, row.owner_id, Role.OWNER.value)
        return await self.stages.commit(row, prepared)

    @contextlib.asynccontextmanager
    async def _session_slot(self, owner_id: str) -> AsyncIterator[None]:
        """
        The owner's active-session limit, checked and held until the new session is written.

        One start at a time per user: two at once would both pass the count before either is inserted.
        """
        async with self.ctx.lock(f"user:{owner_id}"):
            await self._check_session_limit(owner_id)
            yield

    async def _check_session_limit(self, owner_id: str) -> None:
        cap = self.ctx.settings.limits.max_active_sessions_per_user
        active = await self.ctx.db.count_user_sessions(owner_id, [SessionState.GENERATING, SessionState.VOTING])
        if active >= cap:
            raise LimitExceeded(
                "too many sessions",
                user_message=f"You already have {active} active sessions (the limit is {cap}); end one first.",
            )

    async def _import_image(self, session_id: str, owner_id: str, path: Path) -> str:
        """Copy a member's checked image into `inputs/<member>/` (the scheduler uploads it from there)."""
        settings = self.ctx.settings
        folder = owner_dir(settings.storage.data_dir, owner_id)

        def copy() -> str:
            if not path.is_file():
                raise InputError("no such image", user_message=f"There is no image file at {path.name}.")
            # The same checks as an upload: only PNG, JPEG and WebP, within the pixel cap, decodable.
            facts = inspect_image(path, settings.limits.max_upload_pixels)
            dest = folder / f"{session_id}{EXTENSIONS[facts.format]}"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            return str(dest)

        return await asyncio.to_thread(copy)

    async def _our_image(self, path: Path) -> tuple[ImageRecord, Family] | None:
        """The delivered image stored at `path` (its file name is its id) with its family, if it is one of ours."""
        image = await self.ctx.db.image(path.stem)
        if image is None or not image.path:
            return None
        # resolve() walks the file system: off the event loop
        if not await asyncio.to_thread(lambda: Path(image.path).resolve() == path.resolve()):
            return None
        job = await self.ctx.db.get_job(image.id)
        return image, (job.params.family if job else Family.SDXL)


def _new_record(
    flow: Flow,
    owner_id: str,
    prompt: str,
    negative: str,
    ss: SessionSettings,
    idx: int,
    data: SessionData,
    *,
    private: bool,
) -> SessionRecord:
    """A new session, in VOTING: the state its first stage is planned from."""
    now = time.time()
    return SessionRecord(
        id=uuid.uuid4().hex,
        flow=flow,
        owner_id=owner_id,
        visibility=Visibility.PRIVATE if private else Visibility.OPEN,
        state=SessionState.VOTING,
        prompt=prompt,
        negative_prompt=negative,
        settings=ss,
        stage_index=idx,
        data=data,
        created_at=now,
        updated_at=now,
    )


async def _image_size(path: str) -> tuple[int, int]:
    def size() -> tuple[int, int]:
        from PIL import Image

        with Image.open(path) as im:
            return im.width, im.height

    return await asyncio.to_thread(size)
