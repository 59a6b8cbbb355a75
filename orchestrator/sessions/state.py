"""The session state machine: every state change of a session goes through `transition` and its table."""

from __future__ import annotations

from enum import StrEnum

from orchestrator.errors import InvalidState
from orchestrator.sessions.models import SessionState

S = SessionState


class Action(StrEnum):
    """What happens to a session."""

    PLAN = "plan"  #: a stage or round was queued
    STAGE_DONE = "stage_done"  #: the current stage's jobs are all terminal
    FINISH = "finish"  #: the final image is delivered
    BACK = "back"  #: the previous stage became current again
    END = "end"  #: a user ended the session


TRANSITIONS: dict[tuple[SessionState, Action], SessionState] = {
    (S.GENERATING, Action.PLAN): S.GENERATING,  # regenerate while rendering replaces the stage
    (S.VOTING, Action.PLAN): S.GENERATING,
    (S.FINISHED, Action.PLAN): S.GENERATING,  # an upscale after the end of the funnel
    (S.GENERATING, Action.STAGE_DONE): S.VOTING,
    (S.VOTING, Action.FINISH): S.FINISHED,
    (S.GENERATING, Action.BACK): S.VOTING,
    (S.VOTING, Action.BACK): S.VOTING,
    (S.FINISHED, Action.BACK): S.VOTING,
    (S.GENERATING, Action.END): S.ENDED,
    (S.VOTING, Action.END): S.ENDED,
    (S.FINISHED, Action.END): S.ENDED,
}

_REFUSALS: dict[SessionState, str] = {
    S.ENDED: "This session has ended.",
    S.GENERATING: "Wait for this stage to finish.",
    S.FINISHED: "This session is finished.",
    S.VOTING: "That does not fit this session right now.",
}


def transition(state: SessionState, action: Action) -> SessionState:
    """The state after `action`; InvalidState with a message for the user when the table has no such move."""
    to = TRANSITIONS.get((state, action))
    if to is None:
        raise InvalidState(f"{state.value} --{action.value}-> ?", user_message=_REFUSALS[state])
    return to


def require(state: SessionState, *allowed: SessionState) -> None:
    """InvalidState with the state's own message unless the session is in one of `allowed`."""
    if state not in allowed:
        raise InvalidState(f"state {state.value} not in {[a.value for a in allowed]}", user_message=_REFUSALS[state])
