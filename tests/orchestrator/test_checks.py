"""One definition of the prompt / negative / count checks: every front door refuses with the same words."""

from __future__ import annotations

import pytest

from orchestrator.checks import check_count, check_negative, check_prompt
from orchestrator.config import LimitSettings
from orchestrator.errors import InputError
from orchestrator.service import GenerateRequest, Orchestrator
from orchestrator.sessions.syntax import parse_prompt
from tests.orchestrator.farm import farm_config

LIM = LimitSettings(max_prompt_chars=50, max_negative_chars=20, max_count=8)


def test_the_checks_pass_what_fits_and_name_the_limit_otherwise():
    assert check_prompt("a fox", LIM) == "a fox"
    assert check_prompt("  ", LIM, allow_empty=True) == "  "
    assert check_negative("blurry", LIM) == "blurry"
    assert check_count(8, LIM) == 8
    with pytest.raises(InputError, match="empty"):
        check_prompt("   ", LIM)
    with pytest.raises(InputError) as e:
        check_prompt("x" * 51, LIM)
    assert "over 50 characters (51)" in e.value.user_message and "the limit is 50" in e.value.user_message
    with pytest.raises(InputError) as e:
        check_negative("y" * 21, LIM)
    assert "21 characters; the limit is 20" in e.value.user_message
    for check, what in ((check_prompt, "prompt"), (check_negative, "negative prompt")):
        with pytest.raises(InputError) as e:
            check("before\x00after", LIM)
        assert e.value.user_message == f"The {what} contains a NUL character (\\0); remove it."
    for bad in (0, 9):
        with pytest.raises(InputError) as e:
            check_count(bad, LIM)
        assert e.value.user_message == "Count must be between 1 and 8."


def test_generate_and_sessions_refuse_with_the_same_message(tmp_path):
    cfg = farm_config(tmp_path)
    cfg = cfg.with_settings(limits=LIM)
    orch = Orchestrator(cfg)  # build_specs only reads the settings: nothing is started
    long_prompt = "a lighthouse on a cliff at dusk, dramatic clouds, warm light"
    with pytest.raises(InputError) as by_cli:
        orch.build_specs(GenerateRequest(prompt=long_prompt))
    with pytest.raises(InputError) as by_session:
        parse_prompt(long_prompt, LIM)
    assert by_cli.value.user_message == by_session.value.user_message
    with pytest.raises(InputError) as e:
        orch.build_specs(GenerateRequest(prompt="a fox", negative_prompt="z" * 21))
    assert "negative prompt is 21 characters" in e.value.user_message
    with pytest.raises(InputError) as e:
        orch.build_specs(GenerateRequest(prompt="a fox", count=9))
    assert e.value.user_message == "Count must be between 1 and 8."
