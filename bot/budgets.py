"""What one member, one session and the whole bot may spend: cooldowns, one refine per session, the LLM's line."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

from orchestrator.config import LimitSettings
from orchestrator.errors import LimitExceeded

#: the shortest window for one public notice per member (see Budgets.notices)
NOTICE_WINDOW_S = 10.0


def wait_text(seconds: float) -> str:
    """`in 12 s`, `in 2 min`: when a refused member may try again."""
    s = max(1, math.ceil(seconds))
    return f"in {s} s" if s < 120 else f"in {math.ceil(s / 60)} min"


class Cooldown:
    """One member's wait between two actions of one kind; the clock is injectable for tests."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last: dict[str, float] = {}

    def remaining(self, user_id: str) -> float:
        """Seconds until `user_id` may act again (0 when they may now)."""
        last = self._last.get(user_id)
        if last is None:
            return 0.0
        return max(0.0, last + self.seconds - self._clock())

    def take(self, user_id: str) -> float:
        """Start the member's wait if they may act now and return 0; else return what is left of it."""
        left = self.remaining(user_id)
        if left <= 0:
            self._last[user_id] = self._clock()
            # Forget members whose wait is over, so the map does not grow with every member ever seen.
            now = self._clock()
            self._last = {u: t for u, t in self._last.items() if t + self.seconds > now}
        return left

    def give_back(self, user_id: str) -> None:
        """The action was refused for another reason: it does not count against the member."""
        self._last.pop(user_id, None)


class StartTicket:
    """A start in progress; `keep()` once it has cost something, so a refusal still counts against the member."""

    def __init__(self) -> None:
        self.kept = False

    def keep(self) -> None:
        """The start cost a download or more: its cooldown stays even if it is refused now."""
        self.kept = True


class Budgets:
    """The bot's budgets: cooldowns per member, one refine at a time per session, one line for the LLM."""

    def __init__(self, limits: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.starts = Cooldown(limits.session_cooldown_s, clock)
        self.feedback = Cooldown(limits.feedback_cooldown_s, clock)
        #: one notice per member and window for refusals that cannot be ephemeral (thread replies); the window has a
        #: floor so a bot without a feedback cooldown still answers a flood with a few notices, not one per message
        self.notices = Cooldown(max(limits.feedback_cooldown_s, NOTICE_WINDOW_S), clock)
        self.llm = asyncio.Semaphore(limits.max_concurrent_refines)
        self._refining: set[str] = set()

    @contextlib.asynccontextmanager
    async def start(self, user_id: str) -> AsyncIterator[StartTicket]:
        """
        A member starts a session: LimitExceeded (saying when) inside their cooldown.

        A start refused for a cheap reason (a typo in a flag, the session limit) gives the cooldown back, so a
        corrected command works at once; one that cost a download keeps it (`ticket.keep()`).
        """
        left = self.starts.take(user_id)
        if left:
            raise LimitExceeded(
                "start cooldown",
                user_message=f"You started a session a moment ago: you can start another {wait_text(left)}.",
            )
        ticket = StartTicket()
        try:
            yield ticket
        except BaseException:
            if not ticket.kept:
                self.starts.give_back(user_id)
            raise

    @contextlib.asynccontextmanager
    async def refine(self, session_id: str, user_id: str) -> AsyncIterator[None]:
        """A member's feedback for a session: their cooldown, then the session's one refine slot."""
        left = self.feedback.remaining(user_id)
        if left:
            raise LimitExceeded(
                "feedback cooldown",
                user_message=f"Your last feedback or value was a moment ago: you can give more {wait_text(left)}.",
            )
        if session_id in self._refining:
            # Refused before the cooldown is taken: the member may try again as soon as the suggestion is out.
            raise LimitExceeded(
                "refine running",
                user_message="A suggestion for this session is already being worked on: "
                "try again when it is posted (usually within a minute).",
            )
        self.feedback.take(user_id)
        self._refining.add(session_id)
        try:
            yield
        finally:
            self._refining.discard(session_id)

    def typed_value(self, user_id: str) -> None:
        """A Concept Builder value typed by a member starts a round: it shares the feedback cooldown."""
        left = self.feedback.take(user_id)
        if left:
            raise LimitExceeded(
                "value cooldown",
                user_message=f"Your last feedback or value was a moment ago: you can set a value {wait_text(left)}.",
            )

    def refining(self, session_id: str) -> bool:
        """Whether a refine of this session is running or waiting for the model."""
        return session_id in self._refining

    @property
    def model_busy(self) -> bool:
        """Whether a refine would have to wait for the model now."""
        return self.llm.locked()
