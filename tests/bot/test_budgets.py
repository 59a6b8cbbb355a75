"""Budgets on a fake clock: cooldowns say when, give back what a cheap refusal took, and one refine per session."""

from __future__ import annotations

import pytest

from bot.budgets import Budgets, Cooldown, wait_text
from orchestrator.config import LimitSettings
from orchestrator.errors import LimitExceeded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cooldown_counts_down_and_forgets():
    clock = Clock()
    cd = Cooldown(30, clock)
    assert cd.take("a") == 0
    clock.now += 10
    assert cd.take("a") == pytest.approx(20)
    assert cd.take("b") == 0, "members do not share a cooldown"
    clock.now += 21
    assert cd.take("a") == 0


def test_wait_text_rounds_up():
    assert wait_text(0.2) == "in 1 s"
    assert wait_text(59.1) == "in 60 s"
    assert wait_text(600) == "in 10 min"


async def test_start_gives_the_cooldown_back_on_a_cheap_refusal_but_not_after_a_download():
    clock = Clock()
    budgets = Budgets(LimitSettings(session_cooldown_s=30), clock)
    with pytest.raises(ValueError):
        async with budgets.start("a"):
            raise ValueError("typo")
    async with budgets.start("a"):
        pass
    with pytest.raises(LimitExceeded) as e:
        async with budgets.start("a"):
            pass
    assert "in 30 s" in e.value.user_message
    clock.now += 31
    with pytest.raises(ValueError):
        async with budgets.start("a") as ticket:
            ticket.keep()
            raise ValueError("refused after the download")
    with pytest.raises(LimitExceeded):
        async with budgets.start("a"):
            pass


async def test_one_refine_per_session_and_a_busy_session_costs_no_cooldown():
    clock = Clock()
    budgets = Budgets(LimitSettings(feedback_cooldown_s=20), clock)
    async with budgets.refine("s1", "alice"):
        assert budgets.refining("s1")
        with pytest.raises(LimitExceeded) as e:
            async with budgets.refine("s1", "bob"):
                pass
        assert "already being worked on" in e.value.user_message
        async with budgets.refine("s2", "carol"):
            pass
    assert not budgets.refining("s1")
    async with budgets.refine("s1", "bob"):
        pass  # bob's refused try above did not start his cooldown
    with pytest.raises(LimitExceeded) as e:
        async with budgets.refine("s3", "alice"):
            pass
    assert "in 20 s" in e.value.user_message
