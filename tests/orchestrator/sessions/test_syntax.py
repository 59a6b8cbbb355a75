"""The prompt syntax: every flag, good and bad values, permutations and aspect sizes."""

from __future__ import annotations

import pytest

from orchestrator.config import LimitSettings
from orchestrator.errors import InputError
from orchestrator.models import Family
from orchestrator.sessions.syntax import aspect_size, count_permutations, expand, parse_aspect, parse_prompt

LIM = LimitSettings(max_count=40, max_steps=150, max_prompt_chars=200)


def test_plain_prompt_has_no_flags():
    f = parse_prompt("a lighthouse at dusk", LIM)
    assert f.prompt == "a lighthouse at dusk"
    assert (f.negative, f.aspect, f.seed, f.steps, f.family, f.count) == (None, None, None, None, None, None)


def test_every_flag_is_parsed():
    f = parse_prompt("a lighthouse --ar 16:9 --seed 42 --no text, watermark --steps 30 --family sdxl --count 6", LIM)
    assert f.prompt == "a lighthouse"
    assert f.aspect == "16:9"
    assert f.seed == 42
    assert f.negative == "text, watermark"
    assert f.steps == 30
    assert f.family is Family.SDXL
    assert f.count == 6


def test_flags_in_any_order_and_case_and_em_dash():
    f = parse_prompt("cat —no blur --Family FLUX --aspect 2:3", LIM)
    assert f.prompt == "cat" and f.negative == "blur" and f.family is Family.FLUX and f.aspect == "2:3"


def test_repeated_no_accumulates():
    assert parse_prompt("cat --no blur --no text", LIM).negative == "blur, text"


def test_double_dash_inside_a_word_is_not_a_flag():
    assert parse_prompt("a well--lit room", LIM).prompt == "a well--lit room"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("cat --quality 2", "Unknown flag --quality"),
        ("cat --seed", "needs a value"),
        ("cat --seed abc", "whole number"),
        ("cat --seed -1", "between 0 and"),
        ("cat --seed 4294967296", "between 0 and"),
        ("cat --steps 0", "between 1 and 150"),
        ("cat --steps 151", "between 1 and 150"),
        ("cat --count 41", "between 1 and 40"),
        ("cat --count 0", "between 1 and 40"),
        ("cat --family sd3", "not a model family"),
        ("cat --ar wide", "W:H"),
        ("cat --ar 5:1", "between 1:4 and 4:1"),
        ("cat --ar 0:1", "between 1:4 and 4:1"),
        ("cat --seed 1 --seed 2", "given twice"),
    ],
)
def test_bad_flags_say_what_is_accepted(text, needle):
    with pytest.raises(InputError) as e:
        parse_prompt(text, LIM)
    assert needle in e.value.user_message
    assert "--ar W:H" in e.value.user_message and "--count N" in e.value.user_message


def test_empty_and_too_long_prompts_are_refused():
    with pytest.raises(InputError, match="empty"):
        parse_prompt("--seed 3", LIM)
    with pytest.raises(InputError) as e:
        parse_prompt("x" * 201, LIM)
    assert "limit is 200" in e.value.user_message


def test_permutations_expand_in_order():
    assert expand("a {red,blue} car at {dawn,dusk}") == (
        "a red car at dawn",
        "a red car at dusk",
        "a blue car at dawn",
        "a blue car at dusk",
    )
    assert expand("no braces") == ("no braces",)
    assert count_permutations("a {b,c,d}") == 3


def test_nested_and_empty_options():
    assert expand("a {big {red,blue},small} car") == ("a big red car", "a big blue car", "a small car")
    assert expand("cat {,sleeping}") == ("cat", "cat sleeping")


def test_unbalanced_braces_and_too_many_permutations_are_refused():
    with pytest.raises(InputError):
        expand("a {red car")
    with pytest.raises(InputError):
        expand("a red} car")
    with pytest.raises(InputError, match="permutations"):
        expand("{a,b,c,d}{a,b,c,d}{a,b,c,d}", limit=40)


def test_aspect_sizes_are_multiples_of_64_near_native_pixels():
    assert aspect_size("1:1", Family.SD15) == (512, 512)
    assert aspect_size("1:1", Family.SDXL) == (1024, 1024)
    assert aspect_size("16:9", Family.SDXL) == (1344, 768)
    assert aspect_size("9:16", Family.SD15) == (384, 704)
    w, h = aspect_size("3:2", Family.FLUX)
    assert w % 64 == 0 and h % 64 == 0 and abs(w * h - 1024**2) / 1024**2 < 0.1
    assert aspect_size("4:1", Family.SDXL, max_side=1536)[0] <= 1536
    assert parse_aspect("16x9") == (16, 9)
