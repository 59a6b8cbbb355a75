"""The prompt model and the operations over it: each edit on its own, each failure pattern of issue 13 (with other
nouns and phrasings than the issue's), the global checks, and the invariants both paths share."""

from __future__ import annotations

import pytest

from orchestrator.config import LlmSettings
from orchestrator.llm.changes import Changes, RefineRequest
from orchestrator.llm.lexicon import article_for, base_adjective, lemma, participle, plural
from orchestrator.llm.operations import (
    Add,
    DropAttribute,
    Relocate,
    Remove,
    Restyle,
    SetAttribute,
    Swap,
    Weight,
    broken_invariant,
    compile_operations,
)
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.llm.prompt_model import (
    Role,
    categories_of,
    contradictions,
    drop_modifier,
    leaked_request_words,
    orphans,
    parse_tag,
    phrase_in,
    relocate,
    remove_thing,
    replace_phrase,
    set_modifiers,
    term_of,
    tidy,
)
from orchestrator.llm.rules import RuleInterpreter
from orchestrator.models import Family

RULES = FeedbackPipeline(LlmSettings(enabled=False))


def refine(prompt: str, feedback: str) -> str:
    return RULES.refine_rules(RefineRequest(prompt=prompt, feedback=feedback, family=Family.SDXL)).prompt


# ---------------------------------------------------------------------- words and parsing


def test_lexicon_gives_lemmas_plurals_and_articles():
    assert lemma("geese") == "goose" and lemma("waving") == "wave" and lemma("bike") == "bicycle"
    assert base_adjective("taller") == "tall" and base_adjective("happier") == "happy"
    assert plural("wolf") == "wolves" and participle("wave") == "waving"
    assert article_for("umbrella") == "an" and article_for("lamp") == "a"


def test_a_tag_parses_into_phrases_with_heads_and_modifiers():
    tag = parse_tag("a rusty tractor parked beside a red barn")
    roles = dict(zip(tag.words, tag.roles, strict=True))
    assert roles["rusty"] is Role.MOD and roles["tractor"] is Role.HEAD
    assert roles["parked"] is Role.VERB and roles["beside"] is Role.PREP
    assert [tag.head(p) for p in tag.phrases] == [("tractor",), ("barn",)]
    # a compound head stays one head; an adjective before it is a modifier
    sports = parse_tag("a green sports car")
    assert sports.head(sports.phrases[0]) == ("sport", "car") and sports.modifiers(sports.phrases[0]) == ("green",)


def test_categories_come_from_the_data_files():
    assert categories_of("ink drawing") == ["medium"]
    assert categories_of("grey background") == ["background"]
    assert categories_of("a lighthouse at night") == []
    assert term_of("in colour") == ("colour_scheme", "full color")
    assert term_of("like a charcoal sketch") == ("medium", "charcoal sketch")
    assert term_of("a kettle") is None


# ---------------------------------------------------------------------- one edit each


def test_set_modifiers_replaces_the_same_class_only_on_the_named_thing():
    text = "a rusty tractor parked beside a red barn"
    assert set_modifiers(text, "tractor", ["blue"]) == "a rusty blue tractor parked beside a red barn"
    assert set_modifiers("a red kite", "kite", ["yellow"]) == "a yellow kite"
    assert set_modifiers("a tiny owl", "owl", ["huge"]) == "a huge owl"
    assert set_modifiers("an old barn", None, ["wooden"]) == "an old wooden barn"
    assert set_modifiers("a fox", "heron", ["white"]) is None


def test_drop_modifier_keeps_the_noun():
    assert drop_modifier("a quiet library at night", "quiet") == "a library at night"
    assert drop_modifier("a library", "quiet") is None


def test_replace_phrase_swaps_only_the_phrase_and_fixes_the_article():
    assert replace_phrase("a heron standing in a pond", "heron", "an egret") == "an egret standing in a pond"
    assert replace_phrase("a heron standing in a pond", None, "otter") == "an otter standing in a pond"
    # a general word finds the specific subject
    assert replace_phrase("a corgi on a sofa", "dog", "a cat") == "a cat on a sofa"


@pytest.mark.parametrize(
    ("text", "thing", "expected"),
    [
        ("a boy flying a drone over a field", "drone", "a boy over a field"),
        ("a basket of oranges and lemons on a shelf", "lemons", "a basket of oranges on a shelf"),
        ("a basket of oranges and lemons on a shelf", "oranges", "a basket of lemons on a shelf"),
        ("a farmer and her goat in a barn", "goat", "a farmer in a barn"),
        ("a desk with a mug and a notebook", "mug", "a desk with a notebook"),
        ("a shelf with books around", "books", "a shelf"),
        ("a heron in the reeds", "reeds", "a heron"),
        ("sheep grazing on a hill", "sheep", "hill"),
        ("a lantern", "lantern", ""),
    ],
)
def test_remove_thing_takes_only_the_named_item_and_keeps_grammar(text, thing, expected):
    out = remove_thing(text, thing)
    assert out == expected
    assert not orphans(out or "x")


def test_relocate_replaces_the_place_not_the_clothes():
    assert relocate("a sailor standing on a pier", "on", "a glacier") == "a sailor standing on a glacier"
    assert relocate("a nurse in a white coat", "in", "a garden") == "a nurse in a white coat in a garden"


def test_tidy_drops_orphans_and_fixes_articles():
    assert tidy("a heron on a") == "a heron"
    assert tidy("an on the pier") == "the pier"
    assert tidy("a egret and") == "an egret"
    assert tidy("a city from above") == "a city from above"


# ---------------------------------------------------------------------- operations compiled into Changes


def test_each_operation_compiles_into_changes():
    p = "a heron standing in a pond, oil painting"
    assert dict(compile_operations(p, [SetAttribute("heron", ("white",))]).modify) == {"a heron": "a white heron"}
    assert dict(compile_operations(p, [Swap(None, "a crane")]).modify) == {"a heron": "a crane"}
    assert dict(compile_operations(p, [Relocate("in", "a marsh")]).modify) == {"a pond": "a marsh"}
    assert dict(compile_operations("a quiet pond", [DropAttribute("quiet")]).modify) == {"a quiet pond": "a pond"}
    assert compile_operations(p, [Restyle("medium", "ink drawing")]).add == ("ink drawing",)
    assert compile_operations(p, [Add("dragonflies")]).add == ("dragonflies",)
    assert compile_operations(p, [Remove("pond")]).remove == ("pond",)
    assert compile_operations(p, [Weight("pond", -2)]).emphasis_down == ("pond", "pond")


def test_a_region_edit_names_its_target():
    c = compile_operations("a heron, pond", [SetAttribute("pond", ("frozen",))])
    assert c.target == "pond" and dict(c.modify) == {"pond": "frozen pond"}


# ---------------------------------------------------------------------- the patterns of the issue, other nouns


@pytest.mark.parametrize(
    ("prompt", "feedback", "has", "lacks"),
    [
        # an attribute goes to the named thing, not to the end of the prompt or onto another noun
        ("a rusty tractor parked beside a red barn", "turn the tractor green", ["green tractor", "red barn"], []),
        ("a white goose on a lawn", "the goose should be grey", ["gray goose", "lawn"], ["white goose", "should"]),
        ("a kettle on a stove", "can the kettle be copper?", ["copper kettle", "stove"], []),
        ("a pony in a paddock", "the horse should be spotted and smaller", ["small", "spotted", "pony"], ["should"]),
        # "make it ADJ" changes the subject's description, it does not replace the subject
        ("a quiet library at night", "make it less quiet", ["library at night"], ["quiet", "less"]),
        ("a bustling train station", "make it empty and eerie", ["empty", "train station", "eerie"], ["bustling"]),
        # request words never reach the prompt
        ("a sailor on a pier", "make him wave", ["waving sailor", "pier"], ["make him"]),
        ("a sailor on a pier", "put him on a glacier", ["sailor", "glacier"], ["pier", "him"]),
        ("a lamp on a desk", "the lamp should be taller", ["tall lamp"], ["should"]),
        # a new style/background/colour scheme replaces the old one instead of joining it
        ("a teapot, 35mm photo", "make it look like an ink drawing", ["ink drawing", "teapot"], ["photo"]),
        ("a harbor, full color", "in black and white", ["black and white", "harbor"], ["full color"]),
        ("a bottle, grey background", "green background please", ["green background"], ["gray background"]),
        ("a harbor at dawn", "make it midnight", ["harbor at midnight"], ["dawn"]),
        # removal takes the named item out and keeps the phrase whole
        ("a boy flying a drone over a field", "remove the drone", ["boy", "field"], ["drone", "flying"]),
        ("a basket of oranges and lemons", "no lemons", ["basket of oranges"], ["lemons"]),
    ],
)
def test_issue_patterns_with_other_nouns(prompt, feedback, has, lacks):
    out = refine(prompt, feedback)
    for h in has:
        assert phrase_in(out, h), (out, h)
    for x in lacks:
        assert not phrase_in(out, x), (out, x)
    assert not leaked_request_words(prompt, out) and not orphans(out) and not contradictions(prompt, out)


def test_an_unmappable_clause_changes_nothing_and_is_reported():
    r = RULES.refine_rules(
        RefineRequest(prompt="a heron in a pond", feedback="it reminds me of my childhood", family=Family.SDXL)
    )
    assert r.prompt == "a heron in a pond"
    assert r.rationale == 'I did not understand: "it reminds me of my childhood".'
    mixed = RULES.refine_rules(
        RefineRequest(prompt="a heron in a pond", feedback="no pond, it feels wrong somehow", family=Family.SDXL)
    )
    assert "pond" not in mixed.prompt and "I did not understand" in mixed.rationale and "Removed" in mixed.rationale


def test_the_interpreter_reads_operations():
    ops = RuleInterpreter().read("make the heron white, no reeds, ink drawing", "a heron in reeds").operations
    assert ops == (SetAttribute("heron", ("white",)), Remove("reeds"), Restyle("medium", "ink drawing"))


# ---------------------------------------------------------------------- invariants shared by both paths


def test_invariants_are_judged_on_the_prompt_model():
    old = "a heron standing in a pond, photo"
    assert broken_invariant(old, "a heron standing in a marsh, photo", Changes(modify={"pond": "marsh"})) is None
    assert "left the removed 'pond'" in (broken_invariant(old, "a heron by a pond", Changes(remove=("pond",))) or "")
    assert "dropped the subject 'heron'" in (broken_invariant(old, "a pond, photo", Changes(add=("fog",))) or "")
    # replacing the subject is not dropping it
    assert broken_invariant(old, "an egret in a pond, photo", Changes(modify={"a heron": "an egret"})) is None
    assert "request words" in (broken_invariant(old, "a heron, make it foggy, photo", Changes()) or "")
    assert "two medium tags" in (broken_invariant(old, "a heron in a pond, photo, ink drawing", Changes()) or "")
    # "no X" in a prompt does not name X
    assert broken_invariant(old, "a heron standing, no pond, photo", Changes(remove=("pond",))) is None
