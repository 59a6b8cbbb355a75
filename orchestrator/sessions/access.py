"""Who may do what in a session: the permission checks, and the owner's invites and visibility switch."""

from __future__ import annotations

from orchestrator.errors import InvalidState, NotAllowed
from orchestrator.sessions.context import SessionContext
from orchestrator.sessions.models import Role, Session, SessionState, Visibility
from orchestrator.sessions.views import session_of


def may_vote(session: Session, user_id: str) -> bool:
    """Open sessions: anyone; private ones: the owner and invited members."""
    if session.visibility is Visibility.OPEN:
        return True
    return session.role_of(user_id) in (Role.OWNER, Role.INVITED)


def may_advance(session: Session, user_id: str) -> bool:
    """The owner, or anyone in an open session."""
    return user_id == session.owner_id or session.visibility is Visibility.OPEN


def check_vote(session: Session, user_id: str) -> None:
    """Raise unless the session is not ended and `user_id` may vote in it."""
    if session.state is SessionState.ENDED:
        raise InvalidState("ended", user_message="This session has ended.")
    if not may_vote(session, user_id):
        raise NotAllowed(
            f"user {user_id} may not vote in private session {session.id}",
            user_message=f"This is a private session: ask <@{session.owner_id}> for an invite.",
        )


def check_advance(session: Session, user_id: str, what: str = "continue this session") -> None:
    """Raise unless `user_id` may move the session on; `what` completes "Only the owner can ..."."""
    if not may_advance(session, user_id):
        still = "; you can still vote and give feedback" if may_vote(session, user_id) else ""
        raise NotAllowed(
            f"user {user_id} may not {what} ({session.id})", user_message=f"Only the owner can {what}{still}."
        )


def check_owner(session: Session, user_id: str, what: str) -> None:
    """Raise unless `user_id` owns the session; `what` completes "Only the owner can ..."."""
    if user_id != session.owner_id:
        raise NotAllowed(f"user {user_id} is not the owner", user_message=f"Only the owner can {what}.")


class Access:
    """The owner's controls over who may vote: invites and the session's visibility."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx

    async def invite(self, session_id: str, by_user: str, user_id: str) -> Session:
        """Let someone vote in a private session (owner only)."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            session = await session_of(ctx.db, row)
            check_owner(session, by_user, "invite people")
            if session.state is SessionState.ENDED:
                raise InvalidState("ended", user_message="This session has ended.")
            if user_id != row.owner_id:
                await ctx.db.add_participant(session_id, user_id, Role.INVITED.value)
            return await session_of(ctx.db, row)

    async def set_visibility(self, session_id: str, by_user: str, visibility: Visibility) -> Session:
        """Open or close the session to everyone (owner only)."""
        ctx = self.ctx
        async with ctx.lock(session_id):
            row = await ctx.row(session_id)
            check_owner(await session_of(ctx.db, row), by_user, "change who may vote")
            row = row.with_(visibility=Visibility(visibility))
            await ctx.save(row)
            return await session_of(ctx.db, row)
