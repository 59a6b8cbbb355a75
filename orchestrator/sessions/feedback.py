"""
Feedback: turning people's words and votes into a pending prompt suggestion, and applying or undoing it.

The LLM work is in orchestrator.llm.pipeline; this is the glue between it and a session's rows.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from orchestrator.errors import InputError, InvalidState
from orchestrator.events import SessionChanged
from orchestrator.llm.changes import ImageRef4Llm, IntentEntry, RefineRequest, RefineResult
from orchestrator.sessions.access import check_advance, check_vote
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.models import Session, SessionState, StageImage, Suggestion
from orchestrator.sessions.state import require
from orchestrator.sessions.syntax import check_negative, clip_negative, expand
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
        view = await stage_view(ctx.db, st) if st is not None else None
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
            data = {**row.data, "suggestion": suggestion.to_dict(), "suggestion_entry": entry.to_dict()}
            row = dataclasses.replace(row, data=data)
            await ctx.db.update_session(row)
        ctx.bus.publish(SessionChanged(session_id, "suggestion"))
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
            new_prompt = " ".join((prompt if prompt is not None else pending.prompt).split())  # type: ignore[union-attr]
            if negative is not None:
                new_negative = check_negative(negative, limits)
            else:
                new_negative = pending.negative_prompt if pending is not None else row.negative_prompt
            if not new_prompt:
                raise InputError("empty prompt", user_message="The prompt is empty.")
            if len(new_prompt) > limits.max_prompt_chars:
                raise InputError("too long", user_message=f"The prompt is over {limits.max_prompt_chars} characters.")
            expand(new_prompt, limit=limits.max_count)
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
            await ctx.db.add_intent(session_id, entry.to_dict())
            history = [*row.data.get("history", []), [row.prompt, row.negative_prompt]]
            data = {**row.data, "history": history, "suggestion": None, "suggestion_entry": None}
            row = dataclasses.replace(row, prompt=new_prompt, negative_prompt=new_negative, data=data)
            await ctx.db.update_session(row)
            ctx.bus.publish(SessionChanged(session_id, "prompt"))
            return await session_of(ctx.db, row)

    async def discard_suggestion(self, session_id: str, user_id: str) -> None:
        """Drop the pending suggestion."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            check_vote(await session_of(ctx.db, row), user_id)
            row = dataclasses.replace(row, data={**row.data, "suggestion": None, "suggestion_entry": None})
            await ctx.db.update_session(row)
            ctx.bus.publish(SessionChanged(session_id, "suggestion"))

    async def undo(self, session_id: str, user_id: str) -> Session:
        """Go back to the prompt before the last applied suggestion."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            check_advance(await session_of(ctx.db, row), user_id, "undo a prompt change in this private session")
            history = list(row.data.get("history", []))
            if not history:
                raise InvalidState("nothing to undo", user_message="There is no earlier prompt to go back to.")
            prompt, negative = history.pop()
            await ctx.db.pop_intent(session_id)
            row = dataclasses.replace(
                row, prompt=prompt, negative_prompt=negative, data={**row.data, "history": history}
            )
            await ctx.db.update_session(row)
            ctx.bus.publish(SessionChanged(session_id, "prompt"))
            return await session_of(ctx.db, row)


def _ref4llm(im: StageImage) -> ImageRef4Llm:
    path = im.image.path or im.image.thumbnail
    return ImageRef4Llm(number=im.number, path=Path(path) if path else None, prompt=im.image.prompt, seed=im.image.seed)
