"""
Feedback: turning people's words and votes into a pending prompt suggestion, and applying or undoing it.

The LLM work is in orchestrator.llm.pipeline; this is the glue between it and a session's rows.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from orchestrator.checks import check_prompt
from orchestrator.errors import InputError, InvalidState
from orchestrator.llm.changes import ImageRef4Llm, IntentEntry, RefineRequest, RefineResult
from orchestrator.llm.pipeline import undo
from orchestrator.sessions.access import check_advance, check_vote
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.models import Session, SessionState, StageImage, Suggestion
from orchestrator.sessions.state import require
from orchestrator.sessions.syntax import clip_negative, expand, tidy_negative
from orchestrator.sessions.views import session_of, stage_view
from orchestrator.sessions.voting import rank_selection, rejected


class Feedback:
    """Suggests, applies, discards and undoes prompt changes from feedback."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx

    async def refine(self, session_id: str, user_id: str, feedback: str) -> RefineResult:
        """Turn feedback into a suggested prompt (kept pending, not applied) using the current votes."""
        ctx = self.ctx
        row = await ctx.row(session_id)
        session = await session_of(ctx.db, row)
        check_vote(session, user_id)
        if not feedback.strip():
            raise InputError("empty feedback", user_message="The feedback is empty.")
        st = await ctx.current(row)
        view = await stage_view(ctx.db, st, ctx.settings.funnel) if st is not None else None
        refs = [_ref4llm(im) for im in view.images] if view else []
        by_number = {r.number: r for r in refs}
        tallies = {im.number: im.tally for im in view.images} if view else {}
        family = ctx.planner.family_of(row, st)
        request = RefineRequest(
            prompt=row.prompt,
            negative_prompt=row.negative_prompt,
            feedback=feedback,
            family=family,
            selected=tuple(by_number[n] for n in rank_selection(tallies)),
            rejected=tuple(by_number[n] for n in rejected(tallies)),
            stage_images=tuple(refs),
            intent=tuple(IntentEntry.from_dict(d) for d in await ctx.db.intent(session_id)),
        )
        result = await ctx.pipeline.refine(request)
        # The engineer may merge vision traits into the negative: it stays within the same limit as typed ones.
        clipped = clip_negative(result.negative_prompt, ctx.settings.limits.max_negative_chars)
        if clipped != result.negative_prompt:
            result = dataclasses.replace(result, negative_prompt=clipped)
        entry = result.intent_entry(request, time.time())
        suggestion = Suggestion(
            prompt=result.prompt,
            negative_prompt=result.negative_prompt,
            rationale=result.rationale,
            source=str(result.source),
            feedback=feedback,
            by_user=user_id,
        )
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            row = row.with_(data=row.data.with_(suggestion=suggestion, suggestion_entry=entry))
            await ctx.save(row)
        return result

    async def apply_suggestion(
        self,
        session_id: str,
        user_id: str,
        prompt: str | None = None,
        negative: str | None = None,
        *,
        require_pending: bool = False,
    ) -> Session:
        """
        Use the pending suggestion (or the user's edit of it) as the prompt of the next stage.

        require_pending: an edit of a suggestion needs that suggestion still pending (not used or discarded).
        """
        ctx = self.ctx
        limits = ctx.settings.limits
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            session = await session_of(ctx.db, row)
            check_advance(session, user_id, "apply a suggestion in this private session")
            require(session.state, SessionState.GENERATING, SessionState.VOTING, SessionState.FINISHED)
            pending = session.suggestion
            if pending is None and (prompt is None or require_pending):
                raise InvalidState(
                    "no suggestion",
                    user_message="There is no pending suggestion any more (it was used or discarded).",
                )
            typed = prompt if prompt is not None else (pending.prompt if pending is not None else "")
            new_prompt = " ".join(typed.split())
            if negative is not None:
                new_negative = tidy_negative(negative, limits)
            else:
                new_negative = pending.negative_prompt if pending is not None else row.negative_prompt
            check_prompt(new_prompt, limits)
            expand(new_prompt, limit=limits.max_count)
            saved = row.data.suggestion_entry if pending is not None else None
            edited = prompt is not None or negative is not None
            base = saved or IntentEntry.from_dict({"feedback": "", "rationale": f"edited by {user_id}"})
            entry = dataclasses.replace(
                base,
                old_prompt=row.prompt,
                new_prompt=new_prompt,
                old_negative=row.negative_prompt,
                new_negative=new_negative,
                rationale=base.rationale + (f" (edited by {user_id})" if edited and saved else ""),
                created_at=time.time(),
            )
            await ctx.db.add_intent(session_id, entry.to_dict())
            data = row.data.with_(suggestion=None, suggestion_entry=None)
            row = row.with_(prompt=new_prompt, negative_prompt=new_negative, data=data)
            await ctx.save(row)
            return await session_of(ctx.db, row)

    async def discard_suggestion(self, session_id: str, user_id: str) -> None:
        """Drop the pending suggestion."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            check_vote(await session_of(ctx.db, row), user_id)
            await ctx.save(row.with_(data=row.data.with_(suggestion=None, suggestion_entry=None)))

    async def undo(self, session_id: str, user_id: str) -> Session:
        """Go back to the prompt before the last applied suggestion (the intent table keeps the prompts it changed)."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            check_advance(await session_of(ctx.db, row), user_id, "undo a prompt change in this private session")
            before = undo([IntentEntry.from_dict(d) for d in await ctx.db.intent(session_id)])
            if before is None:
                raise InvalidState("nothing to undo", user_message="There is no earlier prompt to go back to.")
            await ctx.db.pop_intent(session_id)
            row = row.with_(prompt=before[0], negative_prompt=before[1])
            await ctx.save(row)
            return await session_of(ctx.db, row)


def _ref4llm(im: StageImage) -> ImageRef4Llm:
    path = im.image.path or im.image.thumbnail
    return ImageRef4Llm(number=im.number, path=Path(path) if path else None, prompt=im.image.prompt, seed=im.image.seed)
