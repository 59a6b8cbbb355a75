"""The prompt model and the operations over it: each edit on its own, each failure pattern of issue 13 (with other
nouns and phrasings than the issue's), the global checks, and the invariants both paths share."""

from __future__ import annotations

import pytest

from orchestrator.config import LlmSettings
from orchestrator.llm.changes import Changes, RefineRequest, RefineResult
from orchestrator.llm.lexicon import article_for, base_adjective, lemma, participle, plural
from orchestrator.llm.operations import (
    Add,
    Attach,
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
from orchestrator.llm.prompt_checks import (
    contradictions,
    leaked_request_words,
    negative_leaks,
    orphans,
    phrase_in,
    request_verbs,
)
from orchestrator.llm.prompt_model import Role, categories_of, parse_tag, term_of
from orchestrator.llm.rules import RuleInterpreter
from orchestrator.llm.tag_edits import drop_modifier, relocate, remove_thing, replace_phrase, set_modifiers, tidy
from orchestrator.models import Family

RULES = FeedbackPipeline(LlmSettings(enabled=False))


def refine(prompt: str, feedback: str) -> str:
    return refined(prompt, feedback).prompt


def refined(prompt: str, feedback: str) -> RefineResult:
    return RULES.refine_rules(RefineRequest(prompt=prompt, feedback=feedback, family=Family.SDXL))


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


# ---------------------------------------------------------------------- actions asked of someone, and the negative


@pytest.mark.parametrize(
    ("prompt", "feedback", "has"),
    [
        # "make/have/let/get X <verb> Y": X does it; the verb is the request's, so it reaches the prompt inflected
        ("a hedgehog on a log", "make the hedgehog wear a knitted hat", ["hedgehog wearing a knitted hat", "log"]),
        ("a nurse in a corridor", "have her carry a clipboard", ["nurse carrying a clipboard", "corridor"]),
        ("a goat on a hill", "let the goat chew a flower", ["goat chewing a flower", "hill"]),
        ("a clown in a tent", "get him to juggle some balls", ["clown juggling some balls", "tent"]),
        ("two hikers on a trail", "make them rest on a rock", ["hikers resting on a rock", "trail"]),
        ("a toddler in a kitchen", "get the toddler to laugh", ["laughing toddler", "kitchen"]),
        ("a lighthouse keeper on a cliff", "could he hold a lantern", ["keeper holding a lantern", "cliff"]),
        ("a mountain village", "make it snow", ["mountain village", "snow"]),
        # a doer other than the subject gets the action, the subject stays as it was
        ("a girl with a dog in a yard", "make the dog fetch a stick", ["girl", "dog fetching a stick", "yard"]),
        # a wearable put on someone is worn, not a new place
        ("a pug on a cushion", "put a bow tie on the pug", ["pug wearing a bow tie", "cushion"]),
        ("a grandpa in a garden", "put sunglasses on him", ["grandpa wearing sunglasses", "garden"]),
        # "a little" before a thing is its size, not a softener
        ("a hamster in a cage", "can the hamster wear a little scarf?", ["hamster wearing a little scarf", "cage"]),
    ],
)
def test_actions_asked_of_someone_attach_to_their_doer(prompt, feedback, has):
    r = refined(prompt, feedback)
    for h in has:
        assert phrase_in(r.prompt, h), (r.prompt, h)
    assert not leaked_request_words(prompt, r.prompt) and not orphans(r.prompt) and not contradictions(prompt, r.prompt)
    assert r.negative_prompt == "" and not negative_leaks(feedback, "", r.negative_prompt)
    assert "I did not understand" not in r.rationale and "out" not in r.rationale


def test_the_action_is_an_attach_operation_on_its_doer():
    read = RuleInterpreter().read
    assert read("make the otter hold a pebble", "an otter in a river").operations == (Attach(None, "holding a pebble"),)
    assert read("have the boy ride a pony", "a boy and a pony, farm").operations == (Attach(None, "riding a pony"),)
    assert read("let the crow carry a key", "a witch with a crow").operations == (Attach("crow", "carrying a key"),)
    # not actions: a new look, a new thing, a swap, a removal
    assert read("make the sky purple", "a field, blue sky").operations == (SetAttribute("sky", ("purple",)),)
    assert read("make it a beagle", "a poodle on a lawn").operations == (Swap(None, "a beagle"),)
    assert read("get rid of the fog", "a pier, fog").operations == (Remove("fog"),)


def test_request_verbs_are_the_verbs_asked_of_someone():
    assert request_verbs("make the cat wear a tiny crown and give it green eyes") == {"wear"}
    assert request_verbs("have her hold an umbrella") == {"hold"}
    assert request_verbs("get him to smile") == {"smile"}
    assert request_verbs("make them sit on a bench") == {"sit"}
    assert request_verbs("make it rain") == {"rain"}
    for plain in ("make the sky purple", "make it a dog", "have a dog in the corner", "get rid of the fog",
                  "make it look like a sketch", "make the walls brick"):  # fmt: skip
        assert request_verbs(plain) == frozenset(), plain


def test_negative_leaks_are_request_words_pronouns_and_asked_verbs():
    feedback = "make the cat wear a tiny crown"
    assert negative_leaks(feedback, "", "cat wear") == ["wear"]
    assert negative_leaks(feedback, "", "blurry, crown") == []
    assert negative_leaks("no people please", "", "people, please") == ["please"]
    assert negative_leaks("lose it", "", "it") == ["it"]
    assert negative_leaks("no hat", "", "make it, hat") == ["make it", "make", "it"]
    # what the negative already had is not the request's doing
    assert negative_leaks("make him hold a rake", "hold", "hold, rake") == []


def test_a_removal_named_by_request_words_never_reaches_the_negative():
    changes = Changes(remove=("him", "wet paint"), negative_add=("make it", "lowres"))
    r = RULES.refine_rules(
        RefineRequest(prompt="a painter, wet paint", feedback="x", family=Family.SDXL), changes=changes
    )
    assert r.negative_prompt == "wet paint, lowres"


def test_invariants_cover_the_negative_prompt():
    old = "a gnome in a garden"
    changes = Changes(add=("a red hat",))
    ok = broken_invariant(
        old, "a gnome wearing a red hat in a garden", changes, feedback="make the gnome wear a red hat"
    )
    assert ok is None
    bad = broken_invariant(
        old,
        "a gnome in a garden, a red hat",
        changes,
        feedback="make the gnome wear a red hat",
        new_negative="gnome wear",
    )
    assert bad == "pasted request words (wear) into the negative prompt"
