"""Words with parts of speech: lemminflect's lemma tables, inflect's plurals and the curated data files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import inflect

import yaml

#: articles and words that only point; they never decide what a phrase names
ARTICLES = frozenset({"a", "an", "the", "some"})
DETERMINERS = ARTICLES | frozenset(
    {"his", "her", "their", "its", "my", "your", "our", "this", "that", "these", "those", "any", "another"}
)
PREPOSITIONS = frozenset(
    {
        "in", "on", "at", "with", "by", "under", "over", "near", "beside", "behind", "against", "of", "through",
        "into", "onto", "outside", "inside", "across", "along", "around", "above", "below", "from", "to",
        "during", "among", "between", "underneath", "atop", "without", "toward", "towards", "beneath", "upon",
        "amid", "amidst", "within", "past", "beyond", "like", "for", "next",
    }
)  # fmt: skip
CONJUNCTIONS = frozenset({"and", "or", "&", "plus", "nor"})
#: prepositions that say where something is (the setting), as opposed to "of", "with", "like"
PLACE_PREPOSITIONS = frozenset(
    {"in", "on", "at", "by", "under", "over", "near", "beside", "behind", "inside", "outside", "across", "along",
     "around", "above", "below", "underneath", "atop", "beneath", "upon", "amid", "within", "against", "through"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Category:
    """A kind of prompt tag (medium, time of day, ...) and the terms that name it."""

    name: str
    exclusive: bool
    #: each term as a tuple of lemmas, longest first so "oil painting" wins over "painting"
    terms: tuple[tuple[str, ...], ...]
    #: the spelled term for each lemma tuple
    spelled: Mapping[tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class Lexicon:
    """The curated vocabulary (data/lexicon.yaml), loaded once."""

    categories: Mapping[str, Category]
    background_heads: frozenset[str]
    category_words: Mapping[str, Mapping[str, str]]
    #: word -> adjective class (colour, size, ...); the class order is English adjective order
    modifier_class: Mapping[str, str]
    modifier_order: tuple[str, ...]
    modifier_opposites: Mapping[str, str]
    synonyms: Mapping[str, str]
    subject_words: frozenset[str]
    request_words: tuple[str, ...]
    numbers: Mapping[str, int]
    places: frozenset[str]
    wearables: frozenset[str]
    #: a general word -> the specific nouns it can mean ("dog" -> retriever, husky, ...)
    kinds: Mapping[str, frozenset[str]]
    #: verbs that describe what a subject does or shows ("make her smile")
    pose_verbs: frozenset[str]


def _load_yaml(name: str) -> Any:
    return yaml.safe_load(resources.files("orchestrator.llm").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def data(name: str) -> Any:
    """One data file of orchestrator/llm/data, parsed (cached: the files never change at run time)."""
    return _load_yaml(name)


def _lemma_key(text: str) -> tuple[str, ...]:
    return tuple(lemma(w) for w in split_words(text))


@cache
def lexicon() -> Lexicon:
    """The curated vocabulary."""
    d = data("lexicon.yaml")
    cats: dict[str, Category] = {}
    for name, spec in d["categories"].items():
        spelled = {_lemma_key(str(t)): str(t) for t in spec["terms"]}
        terms = tuple(sorted(spelled, key=len, reverse=True))
        cats[name] = Category(name, bool(spec["exclusive"]), terms, spelled)
    classes: dict[str, str] = {}
    for cls, ws in d["modifiers"].items():
        for w in ws:
            classes.setdefault(str(w).lower(), str(cls))
    return Lexicon(
        categories=cats,
        background_heads=frozenset(d["background_heads"]),
        category_words={k: {str(a).lower(): str(b) for a, b in v.items()} for k, v in d["category_words"].items()},
        modifier_class=classes,
        modifier_order=tuple(d["modifiers"]),
        modifier_opposites={str(a): str(b) for a, b in d["modifier_opposites"].items()},
        synonyms={str(a).lower(): str(b) for a, b in d["synonyms"].items()},
        subject_words=frozenset(str(w) for w in d["subject_words"]),
        request_words=tuple(str(w) for w in d["request_words"]),
        numbers={str(a): int(b) for a, b in d["numbers"].items()},
        places=frozenset(str(w) for w in d["places"]),
        wearables=frozenset(str(w) for w in d["wearables"]),
        kinds={str(k): frozenset(str(x) for x in v) for k, v in d["kinds"].items()},
        pose_verbs=frozenset(str(v) for v in d["pose_verbs"]),
    )


_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|&")


def split_words(text: str) -> list[str]:
    """Lower-case words of a text (hyphenated words and "lion's" stay one word)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


@cache
def _synonyms() -> dict[str, str]:
    # one-word spellings only: "abit" -> "a bit" is for the feedback reader, not for lemmas
    return {str(a).lower(): str(b) for a, b in data("lexicon.yaml")["synonyms"].items() if " " not in str(b)}


def _all_lemmas(word: str) -> dict[str, tuple[str, ...]]:
    # imported on first use: lemminflect brings numpy (~16 MB), which only the feedback rules need
    from lemminflect import getAllLemmas

    return dict(getAllLemmas(word))


@cache
def parts_of_speech(word: str) -> frozenset[str]:
    """Universal POS tags lemminflect knows for a word (NOUN, ADJ, VERB, ...); empty for unknown words."""
    return frozenset(_all_lemmas(word.lower()))


@cache
def lemma(word: str) -> str:
    """The dictionary form: nouns before adjectives before verbs ('wolves' -> 'wolf', 'smiling' -> 'smile')."""
    w = word.lower()
    w = _synonyms().get(w, w)
    if w.endswith("'s"):
        w = w[:-2]
    lemmas = _all_lemmas(w)
    for upos in ("NOUN", "ADJ", "VERB", "ADV", "PROPN"):
        if upos in lemmas:
            return str(lemmas[upos][0])
    return w


def lemmas(text: str) -> tuple[str, ...]:
    """Lemmas of the words of a text."""
    return tuple(lemma(w) for w in split_words(text))


def is_adjective(word: str) -> bool:
    """A word that modifies a noun: in a curated class, or an adjective to lemminflect."""
    w = word.lower()
    return w in lexicon().modifier_class or "ADJ" in parts_of_speech(w)


def is_noun(word: str) -> bool:
    """A noun to lemminflect, or a word it does not know (names, 'labrador', 'anime')."""
    pos = parts_of_speech(word.lower())
    return "NOUN" in pos or "PROPN" in pos or not pos


def is_verb_only(word: str) -> bool:
    """A word that can be a verb and is no adjective ('smile', 'glow'; not 'clean')."""
    pos = parts_of_speech(word.lower())
    return "VERB" in pos and "ADJ" not in pos and word.lower() not in lexicon().modifier_class


def verb_lemma(word: str) -> str:
    """The verb's dictionary form ('holding' -> 'hold', which `lemma` reads as the noun 'holding'); else the word."""
    w = word.lower()
    verbs = _all_lemmas(w).get("VERB", ())
    return str(verbs[0]) if verbs else w


def is_base_verb(word: str) -> bool:
    """A verb in its dictionary form that is no adjective ('wear', 'sit', 'rain'; not 'wears', 'clean', 'purple')."""
    w = word.lower()
    verbs = _all_lemmas(w).get("VERB", ())
    return w in verbs and "ADJ" not in parts_of_speech(w) and w not in lexicon().modifier_class


def modifier_class(word: str) -> str:
    """The adjective class of a word (colour, size, ...) or 'other'."""
    w = word.lower()
    lx = lexicon()
    if w in lx.modifier_class:
        return lx.modifier_class[w]
    base = lemma(w)
    return lx.modifier_class.get(base, "other")


def base_adjective(word: str) -> str:
    """'bigger' -> 'big', 'happier' -> 'happy': the positive form of a comparative or superlative."""
    w = word.lower()
    lemmas_ = _all_lemmas(w)
    if "ADJ" in lemmas_:
        return str(lemmas_["ADJ"][0])
    return w


def participle(verb: str) -> str:
    """'smile' -> 'smiling' (a verb said as an attribute: 'make her smile')."""
    from lemminflect import getInflection

    forms = getInflection(lemma(verb), tag="VBG")
    return str(forms[0]) if forms else verb


@cache
def _inflect() -> inflect.engine:
    import inflect

    return inflect.engine()


def plural(noun: str) -> str:
    """The plural of a noun ('wolf' -> 'wolves')."""
    return str(_inflect().plural_noun(noun))


def singular(noun: str) -> str:
    """The singular of a plural noun, or the noun itself."""
    s = _inflect().singular_noun(noun)
    return str(s) if s else noun


def is_plural(noun: str) -> bool:
    """True for a plural noun ('wolves', 'people')."""
    return noun.lower() in ("people", "crowds") or bool(_inflect().singular_noun(noun))


def article_for(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return str(_inflect().a(word)).split(" ", 1)[0]
