"""
Edits of one prompt tag over the prompt model: each returns the new tag text, rendered back cleanly.

Set or drop a modifier, replace, attach or remove a phrase, move the subject elsewhere; every result goes
through tidy(), so no edit leaves an orphaned article, preposition or conjunction behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from orchestrator.llm.lexicon import (
    ARTICLES,
    CONJUNCTIONS,
    DETERMINERS,
    PLACE_PREPOSITIONS,
    PREPOSITIONS,
    article_for,
    is_plural,
    lemma,
    lexicon,
    modifier_class,
)
from orchestrator.llm.prompt_model import (
    ADVERB_PARTICLES,
    Role,
    clean_word,
    find_phrase,
    parse_tag,
    subject_phrase,
)


def _article_fix(words: list[str]) -> list[str]:
    out = list(words)
    for i in range(len(out) - 1):
        if out[i].lower() in ("a", "an") and out[i + 1][:1].isalpha():
            want = article_for(clean_word(out[i + 1]) or out[i + 1])
            out[i] = want if out[i].islower() else want.capitalize()
    return out


def tidy(text: str, *, keep_leading_prep: bool = False) -> str:
    """Render words back cleanly: no dangling article, preposition or conjunction; 'a'/'an' agree; no doubles."""
    words = text.split()
    changed = True
    while changed and words:
        changed = False
        low = [clean_word(w) for w in words]
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
            mc = modifier_class(clean_word(m))
            same_class = cls != "other" and mc == cls
            if same_class or opposites.get(clean_word(m)) == adj_low or clean_word(m) == adj_low:
                continue
            keep.append(m)
        mods = keep
        pos = len(mods)
        if cls != "other":
            for k, m in enumerate(mods):
                if _order_index(modifier_class(clean_word(m))) > _order_index(cls):
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
        if r is Role.MOD and lemma(clean_word(tag.words[i])) == target:
            return _join(w for j, w in enumerate(tag.words) if j != i)
    return None


def replace_phrase(text: str, thing: str | None, new: str, *, loose: bool = True) -> str | None:
    """Swap the phrase naming `thing` (the first phrase when None) for a new noun phrase, keeping the rest."""
    tag = parse_tag(text)
    np = find_phrase(tag, thing, loose=loose) if thing else subject_phrase(tag)
    if np is None:
        return None
    new_words = new.split()
    has_det = bool(new_words) and clean_word(new_words[0]) in DETERMINERS | set(lexicon().numbers)
    if not has_det and np.det_end > np.start:
        old_det = [clean_word(w) for w in tag.words[np.start : np.det_end]]
        last = clean_word(new_words[-1]) if new_words else ""
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
    if rest and np.end < len(tag.words) and clean_word(tag.words[np.end]) == verb.lower():
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
        if r is not Role.PREP or clean_word(tag.words[i]) not in PLACE_PREPOSITIONS:
            continue
        np = next((p for p in tag.phrases if p.start == i + 1), None)
        if np is None or set(tag.head(np)) & lx.wearables:
            continue
        return _join([*tag.words[:i], prep, *place.split(), *tag.words[np.end :]])
    return _join([*tag.words, prep, *place.split()])
