"""
Ballots: casting votes on the current stage, and the owner's rules that close a vote (quorum and deadline).

The tallying arithmetic itself is in voting.py.
"""

from __future__ import annotations

import time

from orchestrator.errors import InputError, InvalidState
from orchestrator.events import VotesChanged
from orchestrator.sessions.access import check_owner, check_vote
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.lifecycle import StageLifecycle
from orchestrator.sessions.models import Role, Session, SessionState, StageStatus, VoteResult
from orchestrator.sessions.views import session_of, stage_view


class Ballots:
    """Records votes and voting rules; a vote or a new rule may advance the session at once."""

    def __init__(self, ctx: SessionContext, lifecycle: StageLifecycle) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle

    async def vote(
        self, session_id: str, image_id: str, user_id: str, value: int | None, *, toggle: bool = False
    ) -> VoteResult:
        """Select (+1), reject (-1) or withdraw (None) a vote; with `toggle`, the same vote again withdraws it."""
        if value not in (1, -1, None) or (toggle and value is None):
            raise InputError("vote value", user_message="A vote is select (+1), reject (-1) or none.")
        ctx = self.ctx
        async with ctx.lock(session_id):
            if toggle and await ctx.db.get_vote(image_id, user_id) == value:
                value = None  # read under the lock, so two quick presses cannot both count as "first"
            row = await ctx.row(session_id)
            session = await session_of(ctx.db, row)
            check_vote(session, user_id)
            st = await ctx.current(row)
            image = await ctx.db.image(image_id)
            if st is None or image is None or image.stage_id != st.id:
                raise InvalidState("not in current stage", user_message="That image is not in the current stage.")
            if st.status not in (StageStatus.GENERATING, StageStatus.VOTING):
                raise InvalidState("stage closed", user_message="Voting on this stage is closed.")
            if user_id not in session.participants:
                await ctx.db.add_participant(session_id, user_id, Role.VOTER.value)
            await ctx.db.set_vote(session_id, image_id, user_id, value)
            view = await stage_view(ctx.db, st, ctx.settings.funnel)
            shown = view.image(image.index)
            tally = shown.tally if shown else 0
            ctx.bus.publish(VotesChanged(session_id, st.id, image_id, tally))
            ctx.changed(session_id)
            result = VoteResult(session_id, st.id, image_id, image.index, tally, value, view.selection)
            if row.state is SessionState.VOTING:
                await self.lifecycle.maybe_quorum(row, st)
        return result

    async def set_rules(
        self, session_id: str, by_user: str, *, quorum: int | None = None, deadline_s: float | None = None
    ) -> Session:
        """Advance automatically once `quorum` people voted, or `deadline_s` after a stage opens (owner only)."""
        if quorum is not None and quorum < 1:
            raise InputError("quorum", user_message="The quorum is at least 1 voter.")
        if deadline_s is not None and deadline_s <= 0:
            raise InputError("deadline", user_message="The deadline is a positive number of seconds.")
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            check_owner(await session_of(ctx.db, row), by_user, "change the voting rules")
            row = row.with_(settings=row.settings.with_(quorum=quorum, deadline_s=deadline_s))
            await ctx.save(row)
            ctx.cancel_timer(row.id)
            st = await ctx.current(row)
            if st is not None and st.status is StageStatus.VOTING and row.state is SessionState.VOTING:
                # The stage is already open: the deadline counts from now, and the quorum may already be met.
                at = time.time() + deadline_s if deadline_s else None
                st = st.with_data(st.data.with_(deadline_at=at))
                await ctx.save_stage(st)
                self.lifecycle.arm_deadline(row, st)
                await self.lifecycle.maybe_quorum(row, st)
            return await session_of(ctx.db, await ctx.row(session_id))
