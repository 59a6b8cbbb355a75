"""The rule-based interpreter and engineer: real phrasings, weights, Flux prose, diffs, intent rows, undo."""

from __future__ import annotations

import json

import pytest

import orchestrator.llm as llm_pkg
from orchestrator.llm.changes import Changes, IntentEntry, PromptDiff, Scope, Source
from orchestrator.llm.pipeline import undo, vocab_options
from orchestrator.llm.prompt_text import apply_changes, diff, parse_token, stem, tokenize
from orchestrator.llm.rule_phrases import subject_head
from orchestrator.llm.rules import RuleInterpreter
from orchestrator.llm.vocab import CONCEPT_VOCAB
from orchestrator.models import Family

R = RuleInterpreter()


def interp(feedback: str, prompt: str = "a lighthouse at dusk") -> Changes:
    return R.interpret(feedback, prompt, range(1, 21))


@pytest.mark.parametrize(
    ("feedback", "word"),
    [
        ("no people", "people"),
        ("without the boats", "boats"),
        ("get rid of the hat", "hat"),
        ("remove the scarf please", "scarf"),
        ("lose the glasses", "glasses"),
        ("the cactus is distracting", "cactus"),
        ("I don't like the umbrella", "umbrella"),
        ("can you take out the car", "car"),
        ("no blur", "blur"),
    ],
)
def test_remove_phrasings(feedback, word):
    assert interp(feedback).remove == (word,)


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [
        ("add a dragon", ("dragon",)),
        ("with a red cape", ("red cape",)),
        ("include some candles", ("candles",)),
        ("golden hour", ("golden hour",)),
        ("add a cat and some puddles", ("cat", "puddles")),
        ("add 'Neon Sign'", ("Neon Sign",)),
    ],
)
def test_add_phrasings(feedback, expected):
    assert interp(feedback).add == expected


def test_keep_phrasings_and_quotes_stay_verbatim():
    c = interp('keep the red dress, I love the colors, "Stormy Sea" stays', "a woman, red dress, Stormy Sea")
    assert "red dress" in c.keep
    assert "colors" in c.keep
    assert c.remove == ()


def test_more_and_less_become_emphasis_with_intensity():
    assert interp("more fog").emphasis_up == ("fog",)
    assert interp("much more fog").emphasis_up == ("fog", "fog")
    assert interp("MORE FOG!!!").emphasis_up == ("fog", "fog")
    assert interp("less fog").emphasis_down == ("fog",)
    assert interp("the fire is too much").emphasis_down == ("fire",)


@pytest.mark.parametrize(
    ("feedback", "token"),
    [
        ("make it warmer", "warm golden light"),
        ("warmer light", "warm golden light"),
        ("cooler tones", "cool blue tones"),
        ("darker", "low key lighting"),
        ("make it moodier", "moody atmosphere"),
        ("sharper please", "sharp focus"),
        ("brighter and cleaner", "high key lighting"),
        ("too dark", "high key lighting"),
        ("less saturated", "muted colors"),
        ("spookier", "eerie"),
    ],
)
def test_adjectives_map_to_sd_tokens(feedback, token):
    assert token in interp(feedback).add


def test_adjective_removes_contradicting_tokens_of_the_prompt():
    c = interp("cooler tones", "a cafe, warm tones")
    assert "warm tones" in c.remove
    assert "cool blue tones" in c.add


def test_make_it_a_dog_replaces_the_subject_head():
    c = interp("make it a dog", "a cat on a sofa, blurry")
    assert dict(c.modify) == {"a cat": "a dog"}
    out = apply_changes("a cat on a sofa, blurry", "", c, Family.SD15)
    assert out.prompt.startswith("a dog on a sofa")


def test_region_change_sets_scope_and_target():
    c = interp("make the sky purple", "a city, blue sky")
    assert c.scope is Scope.REGION and c.target == "sky"
    assert dict(c.modify) == {"blue sky": "purple sky"}


def test_replace_and_instead_of():
    assert dict(interp("replace the hat with a crown", "a man, hat").modify) == {"hat": "a crown"}
    assert dict(interp("sunrise instead of sunset", "a tree, sunset").modify) == {"sunset": "sunrise"}


def test_like_number_borrows_only_known_images():
    assert interp("more like #3").borrow_from == (3,)
    assert interp("similar to number 7, and like image 2").borrow_from == (7, 2)
    assert R.interpret("more like #30", "x", range(1, 21)).borrow_from == ()


def test_and_list_inherits_the_verb():
    c = interp("remove the people and the carts")
    assert c.remove == ("people", "carts")
    assert c.add == ()


def test_mixed_request_from_the_brief():
    c = interp("make it a dog, no blur, warmer light", "a cat on a sofa, blurry")
    out = apply_changes("a cat on a sofa, blurry", "", c, Family.SD15)
    assert out.prompt == "a dog on a sofa, warm golden light, warm color palette"
    assert out.negative_prompt == "blurry"


def test_sentiment_only_feedback_changes_nothing():
    assert interp("nice!").is_empty
    assert interp("hmm not sure").is_empty


def test_fix_adds_negatives():
    c = interp("fix the hands")
    assert "bad hands" in c.negative_add


def test_subject_head_skips_quality_tags():
    assert subject_head("masterpiece, best quality, a red fox sitting in snow") == "a red fox"


# ---------------------------------------------------------------------- engineer and text


def test_weights_parse_and_stack_to_the_cap():
    assert parse_token("(fog:1.3)").weight == 1.3
    assert parse_token("((fog))").weight == pytest.approx(1.21)
    assert parse_token("[fog]").weight == pytest.approx(0.91)
    p = "a forest, fog"
    for _ in range(5):
        p = apply_changes(p, "", Changes(emphasis_up=("fog",)), Family.SDXL).prompt
    assert p == "a forest, (fog:1.5)"
    down = apply_changes("a forest, fog", "", Changes(emphasis_down=("fog",)), Family.SDXL).prompt
    assert down == "a forest, (fog:0.8)"


def test_commas_inside_weight_groups_do_not_split():
    assert [t.text for t in tokenize("a cat, (red hat, blue scarf:1.2), sofa")] == [
        "a cat",
        "red hat, blue scarf",
        "sofa",
    ]


def test_flux_gets_sentences_without_weight_syntax():
    c = Changes(add=("warm golden light", "fog"), emphasis_up=("sofa",), remove=("blur",))
    out = apply_changes("a cat on a sofa, (blurry:1.2)", "", c, Family.FLUX)
    assert "(" not in out.prompt and ":1." not in out.prompt
    assert out.prompt.endswith("with warm golden light and fog.")
    assert out.prompt[0].isupper()
    assert "blurry" not in out.prompt.lower()


def test_keep_survives_remove_verbatim():
    c = Changes(keep=("Red Dress",), remove=("dress",))
    out = apply_changes("a woman, Red Dress, street", "", c, Family.SDXL)
    assert "Red Dress" in out.prompt


def test_remove_cuts_a_clause_out_of_a_long_token_and_negates_it():
    out = apply_changes("a cat on a sofa with people around", "", Changes(remove=("people",)), Family.SD15)
    assert out.prompt == "a cat on a sofa"
    assert out.negative_prompt == "people"


@pytest.mark.parametrize(
    ("prompt", "remove", "expected"),
    [
        ("portrait of a {knight,wizard}, oil painting", "knight", "portrait of a wizard, oil painting"),
        ("a {cat,dog,fox} in a forest", "dog", "a {cat,fox} in a forest"),
        ("a {red,blue} car on a street", "red", "a blue car on a street"),
        ("a cat, {watercolor,oil painting}", "{watercolor,oil painting}", "a cat"),
    ],
)
def test_remove_takes_an_option_out_of_its_permutation_group(prompt, remove, expected):
    # The option left in the group would otherwise still render, against its own negative prompt.
    out = apply_changes(prompt, "", Changes(remove=(remove,)), Family.SDXL)
    assert out.prompt == expected


def test_a_look_drops_only_the_contradicting_option_of_a_group():
    prompt = "a lighthouse, {warm,cold} light"
    c = interp("warmer light", prompt)
    out = apply_changes(prompt, "", c, Family.SDXL)
    assert out.prompt.startswith("a lighthouse, warm light")
    assert "{" not in out.negative_prompt and "cold" in out.negative_prompt


def test_removing_a_group_by_name_is_one_clause_not_two():
    c = interp("remove {cat,dog}", "a {cat,dog} in a forest")
    assert c.remove == ("{cat,dog}",)
    out = apply_changes("a {cat,dog} in a forest", "", c, Family.SD15)
    assert "cat" not in out.prompt and "dog" not in out.prompt
    assert out.negative_prompt == "cat, dog"


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (Family.SDXL, "a {cat,dog}, {(watercolor:0.8),oil painting}"),
        (Family.FLUX, "A {cat,dog}, {subtle watercolor,oil painting}."),
    ],
)
def test_emphasis_on_an_option_stays_inside_its_group(family, expected):
    out = apply_changes("a {cat,dog}, {watercolor,oil painting}", "", Changes(emphasis_down=("watercolor",)), family)
    assert out.prompt == expected


def test_add_takes_the_concept_out_of_the_negative():
    out = apply_changes("a street", "people, blurry", Changes(add=("people",)), Family.SD15)
    assert out.negative_prompt == "blurry"


def test_stems_meet():
    assert stem("blurry") == stem("blur") == stem("blurred")
    assert stem("people") == stem("person")


def test_diff_render():
    d = diff("a cat, blurry background", "a cat, golden hour", "", "people")
    assert d.render() == "+ golden hour  - blurry background  (neg + people)"
    assert PromptDiff().render() == "no change"
    assert diff("a cat, fog", "a cat, (fog:1.2)").render() == "+ (fog:1.2)  - fog"


def test_intent_entry_round_trips_through_json():
    e = IntentEntry(
        feedback="no people",
        changes=Changes(remove=("people",), modify={"a cat": "a dog"}, borrow_from=(3,), scope=Scope.REGION),
        old_prompt="a",
        new_prompt="b",
        old_negative="",
        new_negative="people",
        source=Source.RULES,
        rationale="r",
        created_at=12.5,
    )
    assert IntentEntry.from_dict(json.loads(json.dumps(e.to_dict()))) == e


def test_changes_modify_cannot_be_mutated_through_the_callers_dict():
    m = {"a": "b"}
    c = Changes(modify=m)
    m["x"] = "y"
    assert dict(c.modify) == {"a": "b"}


def test_undo_reverts_to_the_previous_prompt():
    assert undo([]) is None
    entries = [
        IntentEntry("f1", Changes(), "p0", "p1", "n0", "n1", Source.RULES, "", 1.0),
        IntentEntry("f2", Changes(), "p1", "p2", "n1", "n2", Source.OLLAMA, "", 2.0),
    ]
    assert undo(entries) == ("p1", "n1")
    assert undo(entries[:1]) == ("p0", "n0")


def test_vocabularies_are_rich_and_options_vary_by_subject():
    for field, words in CONCEPT_VOCAB.items():
        assert len(set(words)) >= 10, field
    a = vocab_options("lighting", "a lighthouse", {}, 4)
    assert len(set(a)) == 4
    assert vocab_options("subject", "a lighthouse", {}, 3)[0].count("lighthouse") == 1
    locked = {"style": CONCEPT_VOCAB["style"][0]}
    assert CONCEPT_VOCAB["style"][0] not in vocab_options("style", "x", locked, 11)


def test_package_exports():
    for name in llm_pkg.__all__:
        assert hasattr(llm_pkg, name), name
