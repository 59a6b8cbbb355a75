"""Exponential backoff with jitter, for reconnects and restarts."""

from __future__ import annotations

import random

#: the jitter's source when none is given: seeding a Random from the OS for each backoff cost a third of a
#: millisecond, and the job path makes several per image
_JITTER = random.Random()


class Backoff:
    """Exponential backoff with jitter, modelled on discord.py's backoff.py."""

    def __init__(self, base: float = 0.2, maximum: float = 10.0, *, rng: random.Random | None = None) -> None:
        self.base = base
        self.maximum = maximum
        self._exp = 0
        self._rng = rng or _JITTER

    def delay(self) -> float:
        """The next wait: a random value in the upper half of base * 2^n, capped at maximum."""
        ceiling = min(self.maximum, self.base * 2**self._exp)
        if ceiling < self.maximum:
            self._exp += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from base (after a successful connection)."""
        self._exp = 0
