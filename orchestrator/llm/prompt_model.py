"""
The prompt model: tags as noun phrases with modifiers and categories, edited and rendered back cleanly.

Each tag is parsed into noun phrases (determiner, modifiers, head) joined by prepositions, conjunctions and
participles, with a category where one is known. Edits are made on this structure, and a tag is rendered back
without orphaned articles or prepositions.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.llm.lexicon import (
    ARTICLES,
    CONJUNCTIONS,
    DETERMINERS,
    PLACE_PREPOSITIONS,
    PREPOSITIONS,
    article_for,
    is_base_verb,
    is_noun,
    is_plural,
    lemma,
    lexicon,
    modifier_class,
    parts_of_speech,
    split_words,
)
from orchestrator.llm.tokens import tokenize
from orchestrator.llm.vocab import QUALITY_TAGS

#: weights a checkpoint tolerates without artefacts (the rules engineer stays inside; checks enforce it)
MIN_WEIGHT = 0.5
MAX_WEIGHT = 1.5
#: words that only say which aspect a category term is about ("stormy weather", "side view shot")
GENERIC_WORDS = frozenset(
    {"day", "time", "style", "shot", "lighting", "light", "sky", "weather", "colors", "color", "tones", "tone",
     "palette", "look", "vibe", "vibes", "feel", "season", "scene", "image", "picture", "version", "colours",
     "colour", "instead", "in", "a", "an", "the", "of", "it", "effect", "mode", "angle"}
)  # fmt: skip


#: prepositions that can stand alone at the end of a phrase ("a city from above", "a path going up")
ADVERB_PARTICLES = frozenset({"above", "below", "behind", "outside", "inside", "underneath", "beneath", "nearby", "up"})


class Role(StrEnum):
    """What a word does in its tag."""

    DET = "det"
    MOD = "mod"
    HEAD = "head"
    PREP = "prep"
    CONJ = "conj"
    VERB = "verb"


@dataclass(frozen=True, slots=True)
class NounPhrase:
    """Word indices of one noun phrase in its tag: [start, det_end) determiners, [det_end, head_start) modifiers."""

    start: int
    det_end: int
    head_start: int
    end: int


@dataclass(frozen=True, slots=True)
class Tag:
    """One prompt tag as words with roles and noun phrases."""

    words: tuple[str, ...]
    roles: tuple[Role, ...]
    phrases: tuple[NounPhrase, ...]

    @property
    def text(self) -> str:
        """The tag as text."""
        return " ".join(self.words)

    def lemmas(self, start: int = 0, end: int | None = None) -> tuple[str, ...]:
        """Lemmas of words [start, end)."""
        return tuple(lemma(w) for w in self.words[start:end])

    def head(self, np: NounPhrase) -> tuple[str, ...]:
        """The head noun(s) of a phrase as lemmas."""
        return self.lemmas(np.head_start, np.end)

    def modifiers(self, np: NounPhrase) -> tuple[str, ...]:
        """The modifier words of a phrase."""
        return tuple(w.lower() for w in self.words[np.det_end : np.head_start])


def _clean(word: str) -> str:
    return re.sub(r"^[^\w&']+|[^\w']+$", "", word.lower())


def _is_head_word(word: str) -> bool:
    # a noun that is not also an adjective or a curated modifier: "sports" in "sports car", not "golden"
    pos = parts_of_speech(word)
    return is_noun(word) and "ADJ" not in pos and word not in lexicon().modifier_class


def _is_participle(word: str) -> bool:
    return word.endswith(("ing", "ed")) and "VERB" in parts_of_speech(word) and len(word) > 4


def parse_tag(text: str) -> Tag:
    """Words -> roles and noun phrases (a shallow chunker: enough to edit one thing without breaking the rest)."""
    words = tuple(text.split())
    clean = [_clean(w) for w in words]
    numbers = lexicon().numbers
    roles: list[Role | None] = []
    for i, w in enumerate(clean):
        prev_content = bool(roles) and roles[-1] is None
        nxt = clean[i + 1] if i + 1 < len(clean) else None
        if w in DETERMINERS or (w in numbers and w not in ("few", "many", "several", "lone", "single")):
            roles.append(Role.DET)
        elif w in PREPOSITIONS and not (w == "like" and i == 0):
            roles.append(Role.PREP)
        elif w in CONJUNCTIONS:
            roles.append(Role.CONJ)
        elif _is_participle(w) and (prev_content or (i == 0 and nxt in DETERMINERS)):
            # after a noun ("a man wearing a hat", "a car parked outside"): a verb, not a modifier
            roles.append(Role.VERB)
        else:
            roles.append(None)
    final: list[Role] = []
    i = 0
    while i < len(roles):
        role = roles[i]
        if role is not None:
            final.append(role)
            i += 1
            continue
        j = i
        while j < len(roles) and roles[j] is None:
            j += 1
        # a run of content words: a compound head at its end ("sports car"), modifiers before it
        run = [Role.MOD] * (j - i)
        run[-1] = Role.HEAD
        k = j - 2
        while k >= i and _is_head_word(clean[k]):
            run[k - i] = Role.HEAD
            k -= 1
        final.extend(run)
        i = j
    phrases: list[NounPhrase] = []
    i = 0
    while i < len(final):
        if final[i] in (Role.DET, Role.MOD, Role.HEAD):
            start = i
            while i < len(final) and final[i] is Role.DET:
                i += 1
            det_end = i
            while i < len(final) and final[i] is Role.MOD:
                i += 1
            head_start = i
            while i < len(final) and final[i] is Role.HEAD:
                i += 1
            if i > head_start:
                phrases.append(NounPhrase(start, det_end, head_start, i))
        else:
            i += 1
    return Tag(words, tuple(final), tuple(phrases))


# ---------------------------------------------------------------------- finding things


def kinds_of(word: str) -> frozenset[str]:
    """The specific nouns a general word can mean, itself included ('dog' -> dog, retriever, husky, ...)."""
    base = lemma(word)
    return frozenset({base, *lexicon().kinds.get(base, frozenset())})


def find_phrase(tag: Tag, thing: str, *, loose: bool = False) -> NounPhrase | None:
    """The noun phrase of `tag` that names `thing` (its head by lemma; its other content words among the phrase's)."""
    want = [lemma(w) for w in split_words(thing) if w not in DETERMINERS and w not in lexicon().numbers]
    if not want:
        return None
    head, rest = want[-1], want[:-1]
    for np in tag.phrases:
        heads = tag.head(np)
        words = set(tag.lemmas(np.det_end, np.end))
        names = {head} | (kinds_of(head) if loose else set())
        if any(h in names for h in heads) and all(r in words for r in rest):
            return np
    return None


def quality_tag(text: str) -> bool:
    """Boilerplate like 'masterpiece' or 'score_9': never the subject."""
    low = text.strip().lower()
    return low in QUALITY_TAGS or low.startswith("score_")


# ---------------------------------------------------------------------- categories


def find_terms(tag: Tag, category: str) -> list[tuple[int, int]]:
    """Word spans of `tag` that are terms of a category (longest term first, no overlaps)."""
    lx = lexicon()
    if category == "background":
        return [
            (np.det_end, np.end) for np in tag.phrases if tag.head(np)[-1:] and tag.head(np)[-1] in lx.background_heads
        ]
    cat = lx.categories[category]
    lem = tag.lemmas()
    spans: list[tuple[int, int]] = []
    taken: set[int] = set()
    for term in cat.terms:
        n = len(term)
        for i in range(len(lem) - n + 1):
            # "snow leopard", "autumn leaves": a term inside a compound noun names the thing, not the weather
            compound = (
                tag.roles[i + n - 1] is Role.HEAD
                and i + n < len(lem)
                and tag.roles[i + n] is Role.HEAD
                and _clean(tag.words[i + n]) not in GENERIC_WORDS | FRAME_NOUNS
            )
            if lem[i : i + n] == term and not taken.intersection(range(i, i + n)) and not compound:
                spans.append((i, i + n))
                taken.update(range(i, i + n))
    return sorted(spans)


def categories_of(text: str) -> list[str]:
    """Categories a tag is wholly about: 'oil painting' -> medium; 'a cat at night' -> none (a subject tag)."""
    tag = parse_tag(text)
    content = [i for i, r in enumerate(tag.roles) if r is not Role.DET]
    out: list[str] = []
    for name in [*lexicon().categories, "background"]:
        spans = find_terms(tag, name)
        covered = {i for s, e in spans for i in range(s, e)}
        rest = [i for i in content if i not in covered and _clean(tag.words[i]) not in GENERIC_WORDS]
        if spans and (not rest or (name == "background" and len(tag.phrases) == 1)):
            out.append(name)
    return out


def term_of(text: str) -> tuple[str, str] | None:
    """(category, the term as spelled) when a short phrase is a category term or a word for one."""
    low = " ".join(split_words(text.replace("&", " and ")))
    # "in color", "like a charcoal sketch", "as a photo": the term is what follows
    low = re.sub(r"^(?:in|into|as|like|to|at|during|by)\s+(?:a\s+|an\s+|the\s+)?(?=\S)", "", low)
    lx = lexicon()
    for name, mapping in lx.category_words.items():
        if low in mapping:
            return name, mapping[low]
    for name in lx.categories:
        cats = categories_of(low)
        if name in cats:
            tag = parse_tag(low)
            s, e = find_terms(tag, name)[0]
            return name, lx.categories[name].spelled.get(tag.lemmas(s, e), " ".join(tag.words[s:e]))
    if "background" in categories_of(low):
        return "background", re.sub(r"^(?:a|an|the)\s+", "", low)
    return None


# ---------------------------------------------------------------------- edits (each returns the new tag text)


def _article_fix(words: list[str]) -> list[str]:
    out = list(words)
    for i in range(len(out) - 1):
        if out[i].lower() in ("a", "an") and out[i + 1][:1].isalpha():
            want = article_for(_clean(out[i + 1]) or out[i + 1])
            out[i] = want if out[i].islower() else want.capitalize()
    return out


def tidy(text: str, *, keep_leading_prep: bool = False) -> str:
    """Render words back cleanly: no dangling article, preposition or conjunction; 'a'/'an' agree; no doubles."""
    words = text.split()
    changed = True
    while changed and words:
        changed = False
        low = [_clean(w) for w in words]
        for i, w in enumerate(low):
            nxt = low[i + 1] if i + 1 < len(low) else None
            if w in ARTICLES | {"his", "her", "their", "its"} and (
                nxt is None or nxt in PREPOSITIONS | CONJUNCTIONS | DETERMINERS
            ):
                del words[i]
                changed = True
                break
            if w in CONJUNCTIONS and (
                i == 0 or nxt is None or nxt in CONJUNCTIONS | PREPOSITIONS or low[i - 1] in PREPOSITIONS
            ):
                del words[i]
                changed = True
                break
            if (
                w in PREPOSITIONS - ADVERB_PARTICLES
                and (
                    nxt is None
                    or (nxt in PREPOSITIONS - {"to", "of"} - ADVERB_PARTICLES and w not in ("next", "out", "from"))
                )
                and (nxt is None or w != "next")
            ):
                del words[i]
                changed = True
                break
            if i == 0 and w in PREPOSITIONS and not keep_leading_prep and w not in ("from",):
                del words[i]
                changed = True
                break
            if nxt is not None and w == nxt and w in DETERMINERS | PREPOSITIONS | CONJUNCTIONS:
                del words[i]
                changed = True
                break
    return " ".join(_article_fix(words)).strip(" ,")


def _join(words: Iterable[str]) -> str:
    return tidy(" ".join(w for w in words if w))


def _order_index(cls: str) -> int:
    # adjectives of no curated class ("medieval", "steampunk") say origin or style: closest to the noun
    order = lexicon().modifier_order
    return order.index(cls) if cls in order else len(order)


_NOT_IN_TAGS = frozenset(
    {"more", "less", "too", "very", "much", "again", "enough", "really", "looks", "look", "seems", "seem", "feels",
     "feel", "is", "are", "was", "were", "be", "been", "would", "could", "should", "can", "will", "not", "than",
     "why", "what", "how", "if", "because", "but", "maybe", "try"}
)  # fmt: skip

#: nouns of a picture itself: in "portrait of a man" the subject is the man
FRAME_NOUNS = frozenset(
    {"portrait", "photo", "photograph", "picture", "painting", "image", "drawing", "sketch", "illustration",
     "render", "shot", "closeup", "close-up", "view", "scene", "study"}
)  # fmt: skip


def subject_phrase(tag: Tag) -> NounPhrase | None:
    """The phrase a tag is about: its first, or the one after 'of' when the first names the picture itself."""
    if not tag.phrases:
        return None
    first = tag.phrases[0]
    if tag.head(first)[-1] in FRAME_NOUNS and first.end < len(tag.words) and _clean(tag.words[first.end]) == "of":
        after = next((p for p in tag.phrases if p.start == first.end + 1), None)
        if after is not None:
            return after
    return first


def set_modifiers(text: str, thing: str | None, adjectives: Sequence[str], *, loose: bool = True) -> str | None:
    """Give the named thing (the tag's subject when None) these adjectives, replacing any of the same class."""
    tag = parse_tag(text)
    np = find_phrase(tag, thing, loose=loose) if thing else subject_phrase(tag)
    if np is None:
        return None
    mods = list(tag.words[np.det_end : np.head_start])
    opposites = lexicon().modifier_opposites
    for adj in adjectives:
        cls = modifier_class(adj) if " " not in adj else modifier_class(adj.split()[-1])
        adj_low = adj.lower()
        keep: list[str] = []
        for m in mods:
            mc = modifier_class(_clean(m))
            same_class = cls != "other" and mc == cls
            if same_class or opposites.get(_clean(m)) == adj_low or _clean(m) == adj_low:
                continue
            keep.append(m)
        mods = keep
        pos = len(mods)
        if cls != "other":
            for k, m in enumerate(mods):
                if _order_index(modifier_class(_clean(m))) > _order_index(cls):
                    pos = k
                    break
        else:
            pos = 0
        mods.insert(pos, adj)
    words = [*tag.words[: np.det_end], *mods, *tag.words[np.head_start :]]
    return _join(words)


def drop_modifier(text: str, word: str) -> str | None:
    """Take one modifier word out of whichever phrase has it ('less cozy' on 'a cozy cabin')."""
    tag = parse_tag(text)
    target = lemma(word)
    for i, r in enumerate(tag.roles):
        if r is Role.MOD and lemma(_clean(tag.words[i])) == target:
            return _join(w for j, w in enumerate(tag.words) if j != i)
    return None


def replace_phrase(text: str, thing: str | None, new: str, *, loose: bool = True) -> str | None:
    """Swap the phrase naming `thing` (the first phrase when None) for a new noun phrase, keeping the rest."""
    tag = parse_tag(text)
    np = find_phrase(tag, thing, loose=loose) if thing else subject_phrase(tag)
    if np is None:
        return None
    new_words = new.split()
    has_det = bool(new_words) and _clean(new_words[0]) in DETERMINERS | set(lexicon().numbers)
    if not has_det and np.det_end > np.start:
        old_det = [_clean(w) for w in tag.words[np.start : np.det_end]]
        last = _clean(new_words[-1]) if new_words else ""
        if old_det[-1] in ("a", "an") and (not last or is_plural(last)):
            pass
        else:
            new_words = [*tag.words[np.start : np.det_end], *new_words]
    return _join([*tag.words[: np.start], *new_words, *tag.words[np.end :]])


def attach(text: str, thing: str | None, phrase: str) -> str | None:
    """Put a phrase right after the named thing (the subject when None): 'a cat' + 'wearing sunglasses'."""
    tag = parse_tag(text)
    np = find_phrase(tag, thing, loose=True) if thing else subject_phrase(tag)
    if np is None:
        return None
    verb, *rest = phrase.split()
    if rest and np.end < len(tag.words) and _clean(tag.words[np.end]) == verb.lower():
        # "a boy wearing glasses" + "wearing a hat" -> "a boy wearing glasses and a hat", not two "wearing"s
        obj = next((p for p in tag.phrases if p.start == np.end + 1), None)
        if obj is not None:
            return _join([*tag.words[: obj.end], "and", *rest, *tag.words[obj.end :]])
    return _join([*tag.words[: np.end], *phrase.split(), *tag.words[np.end :]])


def remove_thing(text: str, thing: str) -> str | None:
    """The tag without the named thing, grammatical; '' when nothing of the tag is left; None when not found."""
    tag = parse_tag(text)
    np = find_phrase(tag, thing)
    if np is None:
        return None
    words, roles = list(tag.words), tag.roles
    s, e = np.start, np.end
    # the thing's own "of ..." / "with ..." complement goes with it ("a bowl of X" keeps only when X is not it)
    before = roles[s - 1] if s > 0 else None
    after = roles[e] if e < len(roles) else None
    if before is Role.CONJ:
        s -= 1
    elif after is Role.CONJ and e + 1 < len(roles):
        e += 1
    elif before in (Role.PREP, Role.VERB):
        s -= 1
        if s > 0 and roles[s - 1] is Role.VERB and roles[s] is Role.PREP:
            s -= 1
        # "with people around": the particle that belonged to the removed phrase goes with it
        if e < len(roles) and roles[e] is Role.PREP and (e + 1 == len(roles) or roles[e + 1] is Role.PREP):
            e += 1
    elif s == 0 or all(r is Role.DET for r in roles[:s]):
        # the tag's own subject goes: what is left is its setting ("people walking on the beach" -> "beach")
        s = 0
        while e < len(roles) and roles[e] in (Role.VERB, Role.PREP):
            e += 1
        if e < len(roles) and roles[e] is Role.DET and all(r is not Role.HEAD for r in roles[:s]):
            while e < len(roles) and roles[e] is Role.DET:
                e += 1
    out = _join([*words[:s], *words[e:]])
    return out if any(ch.isalnum() for ch in out) else ""


def relocate(text: str, prep: str, place: str) -> str:
    """Put the tag's subject somewhere else: its place phrase ('in a forest') becomes `prep place`."""
    tag = parse_tag(text)
    lx = lexicon()
    for i, r in enumerate(tag.roles):
        if r is not Role.PREP or _clean(tag.words[i]) not in PLACE_PREPOSITIONS:
            continue
        np = next((p for p in tag.phrases if p.start == i + 1), None)
        if np is None or set(tag.head(np)) & lx.wearables:
            continue
        return _join([*tag.words[:i], prep, *place.split(), *tag.words[np.end :]])
    return _join([*tag.words, prep, *place.split()])


def is_place_tag(text: str) -> bool:
    """A tag that is only a place ('office', 'a busy street')."""
    tag = parse_tag(text)
    return (
        len(tag.phrases) == 1
        and tag.head(tag.phrases[0])[-1:] != ()
        and tag.head(tag.phrases[0])[-1] in lexicon().places
    )


def only_modifiers_of(text: str, cls: str) -> bool:
    """A tag made only of adjectives of one class ('blue', 'red and gold')."""
    ws = [w for w in split_words(text) if w not in CONJUNCTIONS]
    return bool(ws) and all(modifier_class(w) == cls for w in ws)


def is_clean_phrase(text: str) -> bool:
    """A noun phrase fit to be a prompt tag: content words, no pronoun, no request word, no bare verb."""
    ws = split_words(text)
    if not ws or len(ws) > 8:
        return False
    pronouns = {"i", "me", "you", "it", "he", "she", "we", "they", "him", "her", "them", "us", "this", "that",
                "something", "anything", "everything", "nothing", "someone", "stuff", "whatever"}  # fmt: skip
    if any(w in pronouns for w in ws) and not (ws[0] in ("her", "his", "their") and len(ws) > 1):
        return False
    # words of a request or a description of the image, not of a thing in it
    if any(w in _NOT_IN_TAGS for w in ws):
        return False
    low = " ".join(ws)
    if any(re.search(rf"\b{re.escape(r)}\b", low) for r in lexicon().request_words):
        return False
    tag = parse_tag(text)
    if not tag.phrases:
        return False
    for i, w in enumerate(ws):
        pos = parts_of_speech(w)
        if pos and pos <= {"VERB", "AUX", "ADV"} and not _is_participle(w) and tag.roles[i] is not Role.PREP:
            return False
    return True


# ---------------------------------------------------------------------- checks over whole prompts


def phrase_in(prompt: str, phrase: str) -> bool:
    """The phrase's words (by lemma, articles ignored) in this order inside one tag of the prompt."""
    want = [lemma(w) for w in split_words(phrase.replace("&", " and ")) if w not in ARTICLES]
    if not want:
        return False
    for t in tokenize(prompt):
        have = [lemma(w) for w in split_words(t.text.replace("-", " ")) if w not in ARTICLES]
        have2 = [lemma(w) for w in split_words(t.text) if w not in ARTICLES]
        for seq in (have, have2):
            n = len(want)
            if any(seq[i : i + n] == want for i in range(len(seq) - n + 1)):
                return True
        want2 = [lemma(w) for w in split_words(phrase.replace("-", " ")) if w not in ARTICLES]
        n = len(want2)
        if any(have[i : i + n] == want2 for i in range(len(have) - n + 1)):
            return True
    return False


def leaked_request_words(old_prompt: str, new_prompt: str) -> list[str]:
    """Request words ('should', 'make it', ...) in the new prompt that the old one did not have."""
    old = " ".join(split_words(old_prompt))
    new = " ".join(split_words(new_prompt))
    return [
        r
        for r in lexicon().request_words
        if re.search(rf"\b{re.escape(r)}\b", new) and not re.search(rf"\b{re.escape(r)}\b", old)
    ]


#: words that ask for something or point at the image: they belong to the request, never to a prompt's tag
REQUEST_ONLY_WORDS = frozenset(
    {"make", "let", "should", "please", "can", "could", "would", "must", "want", "it", "he", "she", "they", "him",
     "her", "them", "i", "me", "you", "we", "us"}
)  # fmt: skip
#: verbs that ask for an action of someone: "make the cat wear ...", "let the fox carry ...", "get him to smile"
_CAUSATIVES = frozenset({"make", "makes", "have", "let", "lets", "get", "help"})
#: "make it look like", "make her seem older": verbs of appearance, said of the picture and not done by the subject
APPEARANCE_VERBS = frozenset({"be", "look", "feel", "seem", "appear", "become", "turn", "get", "stay", "keep", "go"})


def request_verbs(feedback: str) -> frozenset[str]:
    """
    The verbs a request asks someone to do: 'wear' in 'make the cat wear a crown', 'smile' in 'get him to smile'.

    After a causative (make/have/let/get/help) come a pronoun or a short noun phrase, then the verb (after an
    optional "to"): a base-form verb followed by nothing, a determiner or a preposition.
    """
    ws = split_words(feedback)
    out: set[str] = set()
    for i, w in enumerate(ws):
        if w not in _CAUSATIVES or (w == "get" and ws[i + 1 : i + 2] == ["rid"]):
            continue
        # the verb follows its doer: a pronoun, or a noun phrase whose first word after the determiner is the noun
        first = i + 3 if ws[i + 1 : i + 2] and ws[i + 1] in (DETERMINERS | ARTICLES) - {"her"} else i + 2
        for k in range(first, min(i + 7, len(ws))):
            v = ws[k]
            if v == "to":
                continue
            if v in APPEARANCE_VERBS or v in DETERMINERS or v in PREPOSITIONS or v in CONJUNCTIONS:
                # "make it look like", "make it a dog", "have a dog in the corner": no action asked of anyone
                break
            if not is_base_verb(v):
                continue
            after = ws[k + 1] if k + 1 < len(ws) else None
            if after is None or after in DETERMINERS or after in PREPOSITIONS or after in lexicon().numbers:
                out.add(v)
                break
    return frozenset(out)


def has_request_words(text: str) -> bool:
    """A phrase with a word only a request uses ('make', 'should', a pronoun): no tag of either prompt."""
    ws = split_words(text)
    low = " ".join(ws)
    return any(w in REQUEST_ONLY_WORDS for w in ws) or any(
        " " in r and re.search(rf"\b{re.escape(r)}\b", low) for r in lexicon().request_words
    )


def negative_leaks(feedback: str, old_negative: str, new_negative: str) -> list[str]:
    """
    Words of the request in the new negative prompt that the old one did not have.

    Only content an operation produced may reach the negative prompt: no request words ('make', 'should',
    'please'), no pronouns, and no verb the request asked someone to do ('wear' of 'make the cat wear a crown').
    """
    old = set(split_words(old_negative))
    new = [w for w in dict.fromkeys(split_words(new_negative)) if w not in old]
    verbs = request_verbs(feedback)
    low = " ".join(split_words(new_negative))
    old_low = " ".join(split_words(old_negative))
    phrases = [
        r
        for r in lexicon().request_words
        if " " in r and re.search(rf"\b{re.escape(r)}\b", low) and not re.search(rf"\b{re.escape(r)}\b", old_low)
    ]
    return [*phrases, *(w for w in new if w in REQUEST_ONLY_WORDS or w in verbs)]


def orphans(prompt: str) -> list[str]:
    """Tags that end in (or are only) an article, preposition or conjunction, or have an article before one."""
    bad: list[str] = []
    for t in tokenize(prompt):
        ws = split_words(t.text)
        if not ws:
            continue
        dangling = ws[-1] in ARTICLES | CONJUNCTIONS | (PREPOSITIONS - ADVERB_PARTICLES - {"around"})
        doubled = any(a in ARTICLES and b in PREPOSITIONS | CONJUNCTIONS | ARTICLES for a, b in itertools.pairwise(ws))
        if dangling or doubled or ws[0] in CONJUNCTIONS:
            bad.append(t.text)
    return bad


def contradictions(old_prompt: str, new_prompt: str) -> list[str]:
    """Duplicate tags, two tags of one exclusive category (one of them new), weights out of range."""
    problems: list[str] = []
    old_keys = {" ".join(split_words(t.text)) for t in tokenize(old_prompt)}
    seen: dict[str, str] = {}
    by_cat: dict[str, list[str]] = {}
    for t in tokenize(new_prompt):
        key = " ".join(split_words(t.text))
        if key in seen:
            problems.append(f"duplicate tag {t.text!r}")
        seen[key] = t.text
        if not MIN_WEIGHT - 1e-6 <= t.weight <= MAX_WEIGHT + 1e-6:
            problems.append(f"weight {t.weight} of {t.text!r} out of range")
        tag = parse_tag(t.text)
        for name, cat in lexicon().categories.items():
            if cat.exclusive and find_terms(tag, name):
                by_cat.setdefault(name, []).append(key)
        if find_terms(tag, "background"):
            by_cat.setdefault("background", []).append(key)
    for name, keys in by_cat.items():
        if len(keys) > 1 and any(k not in old_keys for k in keys):
            problems.append(f"two {name} tags: {', '.join(keys)}")
    return problems
