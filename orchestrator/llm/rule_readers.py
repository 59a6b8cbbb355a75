"""
The clause readers of the rule interpreter: what one kind of clause becomes as operations.

rules.py matches a clause against its patterns and hands the parts to one reader (remove, add, swap, make, too,
less, more, a bare phrase, ...); apart from the patterns so that the pattern table stays readable on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orchestrator.llm.lexicon import (
    DETERMINERS,
    base_adjective,
    is_adjective,
    is_base_verb,
    is_noun,
    lexicon,
    modifier_class,
    participle,
    parts_of_speech,
    split_words,
    verb_lemma,
)
from orchestrator.llm.operations import (
    Add,
    Attach,
    DropAttribute,
    Keep,
    Look,
    Operation,
    Relocate,
    Remove,
    Restyle,
    SetAttribute,
    Swap,
    Weight,
)
from orchestrator.llm.prompt_checks import APPEARANCE_VERBS
from orchestrator.llm.prompt_model import find_phrase, is_clean_phrase, parse_tag, term_of
from orchestrator.llm.prompt_text import matches, normalize, tokenize
from orchestrator.llm.rule_phrases import (
    ARTICLE,
    SUBJECT,
    adjective_list,
    base_phrase,
    has_modifier,
    has_noun,
    in_prompt,
    is_thing,
    modifier_by_stem,
    names_subject,
    one_phrase,
    plain,
    pose_verb,
    term_inside,
    with_article,
)
from orchestrator.llm.rule_text import restore_quotes, tidy_clause
from orchestrator.llm.vocab import ADJECTIVES, ASPECT_NOUNS, LOOKS, OPPOSITES

#: "have the cat look at the camera": a look that is an action, not an appearance ("make it look like a sketch")
_LOOK_ACTION = frozenset({"at", "up", "down", "into", "toward", "towards", "away", "out", "over", "around"})
#: "put a hat on him", "give her a scarf": how a wearable joins its wearer
_WORN_VERB = "wearing"
#: "X should wear Y": verbs whose object joins the thing instead of replacing it
_ATTACH_VERBS = frozenset({"wear", "hold", "carry", "have", "has", "eat", "ride", "play", "read", "drink", "use"})


@dataclass
class Reading:
    """The operations read so far and the clause kind/target a following "and ..." continues."""

    prompt: str
    ops: list[Operation] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    kind: str | None = None
    target: str | None = None
    #: the clause was joined to the previous one by "and"/"or" (not a comma)
    joined: bool = False
    #: the clause ended in "instead": a new thing replaces the subject rather than joining it
    instead: bool = False


class ClauseReaders:
    """What each kind of clause becomes: the readers RuleInterpreter dispatches a matched clause to."""

    def _remove(self, thing: str, r: Reading) -> str | None:
        if not thing or re.fullmatch(SUBJECT, thing):
            return None
        lead = thing.split()[0] if thing.split() else ""
        if lead in ("more", "less") or not is_thing(thing) or not is_clean_phrase(thing):
            return None
        known = any(matches(t.text, thing) for t in tokenize(r.prompt))
        if not known and len(split_words(thing)) > 4:
            # a long clause the prompt does not have is a sentence, not a thing to remove
            return None
        r.ops.append(Remove(thing))
        return "remove"

    def _add(self, thing: str, r: Reading, strong: bool) -> str | None:
        thing = re.sub(r"^(?:more|another|extra|some more)\s+", "", thing)
        thing = re.sub(r"\s+(?:next to|beside|near|behind|in front of|around|on)\s+(?:it|him|her|them)$", "", thing)
        found = term_of(thing)
        if found:
            r.ops.append(Restyle(*found))
            return "add"
        if not is_clean_phrase(thing):
            return None
        r.ops.append(Add(base_phrase(thing), strong))
        return "add"

    def _swap(self, old: str, new: str, r: Reading) -> str | None:
        new = ARTICLE.sub(lambda m: m.group(0) if m.group(0).strip() in ("a", "an") else "", new).strip()
        if re.fullmatch(SUBJECT, old) or old in ("everything", "the image"):
            return self._make_into(None, new, r, False, False)
        exists = any(find_phrase(parse_tag(t.text), old, loose=True) for t in tokenize(r.prompt))
        # "change the dress to a blue one": a new attribute, not a new thing
        one = re.fullmatch(r"(?:a|an|the)?\s*(.+?)\s+one", new)
        if one and adjective_list(one.group(1)):
            r.ops.append(SetAttribute(old, tuple(adjective_list(one.group(1)) or ())))
            return "set"
        adjs = adjective_list(new)
        if adjs and exists:
            r.ops.append(SetAttribute(old, tuple(adjs)))
            return "set"
        if not exists:
            found = term_of(new)
            if found:
                r.ops.append(Restyle(*found))
                return "style"
        if not is_clean_phrase(new) or not has_noun(new):
            return None
        r.ops.append(Swap(old, new))
        return "swap"

    def _action(self, rest: str, r: Reading) -> str | None:
        """
        'the cat wear a tiny crown' (after make/have/let/get/can/I want): the doer gets the action as a participle.

        The doer is a pronoun (the subject) or the shortest noun phrase followed by a base-form verb; the verb is
        part of the request, so it only ever reaches the prompt inflected and attached to its doer.
        """
        ws = rest.split()
        for k in range(1, min(len(ws), 5)):
            who, tail = " ".join(ws[:k]), ws[k:]
            if tail[:1] == ["to"]:
                tail = tail[1:]
            if not tail or not is_base_verb(tail[0]):
                continue
            if tail[0] in APPEARANCE_VERBS and not (tail[0] == "look" and tail[1:2] and tail[1] in _LOOK_ACTION):
                continue
            verb, obj = tail[0], " ".join(tail[1:])
            subject = bool(re.fullmatch(SUBJECT, who))
            thing = None if subject else ARTICLE.sub("", who)
            if thing is not None and (not is_thing(thing) or not one_phrase(thing) or not has_noun(thing)):
                continue
            if thing is not None and names_subject(thing, r.prompt):
                thing = None
            return self._do(thing, verb, obj, r)
        return None

    def _do(self, thing: str | None, verb: str, obj: str, r: Reading) -> str | None:
        """A doer (None: the subject) and a verb with its object: 'wearing a crown', 'sitting on a bench'."""
        if not obj:
            found = term_of(verb)
            if thing is None and found and found[0] == "weather":
                # "make it rain": the weather, not an action of the subject
                r.ops.append(Restyle(*found))
                return "style"
            if verb_lemma(verb) not in lexicon().pose_verbs:
                return None
            r.ops.append(SetAttribute(thing, (participle(verb),)))
            r.target = thing
            return "set"
        phrase = f"with {obj}" if verb in ("have", "has") else f"{participle(verb)} {obj}"
        if not is_clean_phrase(phrase) or not parse_tag(obj).phrases:
            return None
        r.ops.append(Attach(thing, phrase))
        r.target = thing
        return "set"

    def _put_on(self, what: str, prep: str, wearer: str, r: Reading) -> str | None:
        """'put a party hat on the dog', 'put a hat on him': a wearable put on someone is worn, not a new place."""
        tag = parse_tag(what)
        head = tag.head(tag.phrases[-1]) if tag.phrases else ()
        if prep != "on" or not head or head[-1].lower() not in lexicon().wearables or not is_clean_phrase(what):
            return None
        who = ARTICLE.sub("", wearer.strip())
        # "on her head": the body part's owner wears it
        owned = re.fullmatch(r"(?:his|her|their|its)\s+\S+", wearer.strip())
        if owned or re.fullmatch(SUBJECT, wearer.strip()) or names_subject(who, r.prompt):
            target = None
        elif any(find_phrase(parse_tag(t.text), who, loose=True) for t in tokenize(r.prompt)):
            target = who
        else:
            return None
        r.ops.append(Attach(target, f"{_WORN_VERB} {with_article(what)}"))
        r.target = target
        return "set"

    def _put(self, who: str, prep: str, place: str, r: Reading) -> str | None:
        prep = {"to": "in", "into": "in", "onto": "on", "inside": "in"}.get(prep, prep)
        worn = self._put_on(who, prep, place, r)
        if worn:
            return worn
        if not is_clean_phrase(place):
            return None
        if re.fullmatch(SUBJECT, who) or who in ("him", "her", "them", "it") or names_subject(who, r.prompt):
            r.ops.append(Relocate(prep, place))
            return "put"
        if is_clean_phrase(f"{who} {prep} {place}"):
            r.ops.append(Add(f"{who} {prep} {place}"))
            return "add"
        return None

    def _make(self, rest: str, quotes: list[str], r: Reading, strong: bool, weak: bool) -> str | None:
        rest = restore_quotes(rest, quotes)
        possessive = re.match(r"^(?:his|her|their|its)\s+\S+\s+\S+", rest)
        m = re.match(rf"^{SUBJECT}\s+(.*)$", rest) or re.match(r"^(?:everything|all)\s+(.*)$", rest)
        if m and not possessive:
            return self._make_into(None, m.group(1), r, strong, weak)
        # "make the sky purple", "make her hair blonde", "make the owl's eyes glow": the shortest thing that fits
        ws = rest.split()
        for k in range(1, len(ws)):
            thing, what = " ".join(ws[:k]), " ".join(ws[k:])
            thing = ARTICLE.sub("", thing)
            if not thing or not is_thing(thing) or not one_phrase(thing):
                continue
            if (
                adjective_list(plain(what))
                or pose_verb(what)
                or term_of(what)
                or re.match(r"^(?:a|an|into|look|more|less)\b", what)
            ):
                return self._make_into(thing, what, r, strong, weak)
            if len(what.split()) == 1 and is_noun(what) and what not in DETERMINERS:
                # "make the pot terracotta", "make the walls brick": a noun said as the thing's material
                r.ops.append(SetAttribute(thing, (what,)))
                return "set"
        return None

    def _make_into(self, thing: str | None, what: str, r: Reading, strong: bool, weak: bool) -> str | None:
        """'make <thing> <what>': <what> is a look, a style, an adjective list, a verb, or a new noun phrase."""
        simile = bool(re.match(r"^(?:(?:look|feel|seem)\s+(?:more\s+)?)?like\s", tidy_clause(what)))
        what = plain(what)
        if not what:
            return None
        if simile and not term_of(what):
            # "feel like a dream", "look like a castle": a comparison, not a new subject
            return None
        if what.startswith("less "):
            return self._less(what[5:], r, strong)
        if what.startswith("more "):
            return self._more(what[5:], r, strong, weak, thing)
        found = term_of(what)
        if found and (thing is None or found[0] != "background") and not (thing is None and what in ADJECTIVES):
            r.ops.append(Restyle(*found))
            return "style"
        adjs = adjective_list(what)
        if adjs is not None:
            return self._adjectives(thing, adjs, r, strong, weak)
        quality, _, part = what.partition(" with ")
        if part and adjective_list(quality) and is_clean_phrase(part) and has_noun(part):
            # "white with red laces": a quality and a part
            self._adjectives(thing, adjective_list(quality) or [], r, strong, weak)
            r.ops.append(Attach(thing, f"with {part}"))
            return "set"
        verb = pose_verb(what)
        if verb:
            r.ops.append(SetAttribute(thing, (participle(verb),)))
            return "set"
        first, _, rest = what.partition(" ")
        first = verb_lemma(first) if first.endswith("ing") else first
        if first in _ATTACH_VERBS and rest and is_clean_phrase(rest) and has_noun(rest):
            # "he should wear a scarf": the thing gets the phrase, it is not replaced by it
            verb = "with" if first in ("have", "has") else participle(first)
            r.ops.append(Attach(thing, f"{verb} {rest}"))
            return "set"
        rest_adjs = adjective_list(rest) if rest else None
        if pose_verb(first) and rest_adjs:
            r.ops.append(SetAttribute(thing, (*rest_adjs, participle(first))))
            return "set"
        if not is_clean_phrase(what) or not has_noun(what):
            return None
        if thing is None:
            r.ops.append(Swap(None, what))
            return "swap"
        r.ops.append(Swap(thing, what))
        return "swap"

    def _adjectives(self, thing: str | None, adjs: list[str], r: Reading, strong: bool, weak: bool) -> str:
        """Adjectives for a thing (None: the whole image or its subject)."""
        attrs: list[str] = []
        for a in adjs:
            key = ADJECTIVES.get(a)
            found = term_of(a)
            if thing is None and key and key in LOOKS and found and found[0] == "weather":
                r.ops.append(Look(key, strong and not weak))
            elif found and found[0] != "background":
                r.ops.append(Restyle(*found))
            elif thing is None and key and (modifier_class(a) == "other" or key in ("dark", "bright", "cozy", "scary")):
                r.ops.append(Look(key, strong and not weak))
            else:
                # a comparative asks for the quality: "lonelier" -> "lonely", "bigger" -> "big"
                attrs.append(" ".join(base_adjective(w) for w in a.split()))
        if attrs:
            r.ops.append(SetAttribute(thing, tuple(attrs)))
        r.target = thing
        return "set"

    def _describe(self, thing: str, what: str, r: Reading, strong: bool, weak: bool) -> str | None:
        """'<thing> should be <what>' and its kin."""
        what = tidy_clause(what)
        what = re.sub(r"^(?:made of|made from|in)\s+", "", what)
        subject = re.fullmatch(SUBJECT, thing) or thing in ("it", "everything", "the image")
        return self._make_into(None if subject else thing, what, r, strong, weak)

    def _too(self, thing: str | None, what: str, r: Reading, strong: bool) -> str | None:
        """'the grass is too tall' -> short grass; 'too bright' -> the dark look; 'too many people' -> fewer."""
        what = tidy_clause(what)
        many = re.match(r"^(?:many|much)\s+(.+)$", what)
        if many:
            r.ops.append(Weight(ARTICLE.sub("", many.group(1)), -2 if strong else -1))
            return "less"
        target = (
            None
            if thing is None or re.fullmatch(SUBJECT, ARTICLE.sub("", thing.strip()))
            else ARTICLE.sub("", thing.strip())
        )
        word = what.split()[0] if what.split() else ""
        base = base_adjective(word)
        opposite = lexicon().modifier_opposites.get(base)
        key = ADJECTIVES.get(word)
        person = thing is not None and thing.strip() in ("he", "she", "they", "him", "her", "them")
        if (target is not None or person) and opposite:
            # "the grass is too tall", "he looks too young": the thing gets the opposite quality
            r.ops.append(SetAttribute(target, (opposite,)))
            return "set"
        if key and key in OPPOSITES and target is None:
            r.ops.append(Look(OPPOSITES[key], strong))
            return "look"
        if opposite:
            r.ops.append(SetAttribute(target, (opposite,)))
            return "set"
        if key and key in OPPOSITES:
            r.ops.append(Look(OPPOSITES[key], strong))
            return "look"
        if is_adjective(word):
            r.ops.append(DropAttribute(word))
            return "less"
        return None

    def _less(self, what: str, r: Reading, strong: bool) -> str | None:
        ws = what.split()
        if not ws:
            return None
        style = term_of(what)
        if style and in_prompt(style[1], r.prompt):
            # "less cartoony" of "a cartoon frog": the style word goes
            r.ops.append(DropAttribute(style[1]))
            return "less"
        key = ADJECTIVES.get(" ".join(ws[:2])) or ADJECTIVES.get(ws[0])
        if any(has_modifier(t.text, ws[0]) for t in tokenize(r.prompt)):
            r.ops.append(DropAttribute(ws[0]))
            return "less"
        if len(ws) == 1:
            # "less mist" of "a misty lake": the adjective made of the word goes
            made_of = modifier_by_stem(r.prompt, ws[0])
            if made_of:
                r.ops.append(DropAttribute(made_of))
                return "less"
        if key and key in OPPOSITES and all(w in ASPECT_NOUNS for w in ws[1:]):
            r.ops.append(DropAttribute(ws[0]))
            return "less"
        if not is_thing(what):
            return None
        r.ops.append(Weight(what, -2 if strong else -1))
        return "less"

    def _more(self, what: str, r: Reading, strong: bool, weak: bool, thing: str | None = None) -> str | None:
        ws = what.split()
        if not ws:
            return None
        key = ADJECTIVES.get(" ".join(ws[:2])) or ADJECTIVES.get(ws[0])
        if key and all(w in ASPECT_NOUNS for w in ws[1:]):
            r.ops.append(Look(key, strong and not weak))
            return "look"
        if any(matches(t.text, what) for t in tokenize(r.prompt)):
            r.ops.append(Weight(what, 2 if strong else 1))
            return "more"
        found = term_of(what)
        if found:
            r.ops.append(Restyle(*found))
            return "style"
        adjs = adjective_list(what)
        if adjs and len(adjs) == len(ws):
            return self._adjectives(thing, adjs, r, strong, weak)
        if not is_clean_phrase(what):
            return None
        # "more fog" of a prompt without fog: the engineer adds it already weighted up
        r.ops.append(Weight(base_phrase(what), 2 if strong else 1))
        return "more"

    def _bare(self, clause: str, quotes: list[str], r: Reading, strong: bool, weak: bool) -> str | None:
        text = restore_quotes(clause, quotes)
        p = ARTICLE.sub("", text)
        if r.kind == "set" and adjective_list(p):
            return self._adjectives(r.target, adjective_list(p) or [], r, strong, weak)
        if r.kind == "instead" and r.target:
            return self._swap(r.target, text, r)
        last = r.ops[-1] if r.ops else None
        pose = pose_verb(p)
        if r.joined and isinstance(last, Attach) and pose:
            # "make her hold a cup and smile": the same doer does the second thing too
            r.ops.append(SetAttribute(last.target, (participle(pose),)))
            return "set"
        if r.joined and isinstance(last, Attach) and is_clean_phrase(p) and has_noun(p):
            # "make the dog wear boots and a raincoat": the second thing is worn too, not a new tag
            verb = last.phrase.split()[0]
            if verb == "with" or verb.endswith("ing"):
                r.ops.append(Attach(last.target, f"{verb} {text}"))
                return "set"
        ws = clause.split()
        # "warmer", "warmer light", "darker mood"
        two = " ".join(ws[:2])
        key = ADJECTIVES.get(two) or ADJECTIVES.get(ws[0])
        rest = ws[2:] if two in ADJECTIVES else ws[1:]
        if key and (not rest or all(w in ASPECT_NOUNS for w in rest)):
            r.ops.append(Look(key, strong and not weak))
            return "look"
        found = term_of(clause) or term_inside(clause)
        if found:
            r.ops.append(Restyle(*found))
            return "style"
        # "no people and cars", "keep the dress, the hat": the verb carries over to the next item
        if r.kind == "remove" and is_thing(p) and (r.joined or any(matches(t.text, p) for t in tokenize(r.prompt))):
            return self._remove(p, r)
        if r.kind == "keep":
            r.ops.append(Keep(p))
            return "keep"
        if quotes and re.search(r"qq\d+qq", clause):
            present = any(matches(t.text, text) for t in tokenize(r.prompt))
            r.ops.append(Keep(text) if present else Add(text))
            return "keep" if present else "add"
        if r.kind == "add" and is_clean_phrase(p):
            return self._add(p, r, strong)
        adjs = adjective_list(p)
        if adjs and len(adjs) == len(p.split()):
            return self._adjectives(None, adjs, r, strong, weak)
        if not is_clean_phrase(p) or not is_thing(p) or not any("NOUN" in parts_of_speech(w) for w in p.split()):
            return None
        # "green apple", "calm sea", "one duck": a thing the prompt has, said anew; else a new thing
        tag = parse_tag(p)
        head = tag.head(tag.phrases[-1]) if tag.phrases else ()
        present = bool(head) and any(find_phrase(parse_tag(t.text), head[-1], loose=True) for t in tokenize(r.prompt))
        if present and len(tag.phrases) == 1 and tag.phrases[0].end == len(tag.words):
            np = tag.phrases[0]
            mods = [base_adjective(w) for w in tag.modifiers(np)]
            if np.det_end == np.start and mods and all(modifier_class(m) != "other" for m in mods):
                # "green apple", "bigger boat": new qualities of the same thing, its other adjectives stay
                r.ops.append(SetAttribute(head[-1], tuple(mods)))
                return "set"
            if any(normalize(t.text) == normalize(p) for t in tokenize(r.prompt)) or (
                not mods and np.det_end == np.start
            ):
                # "swans" said of a prompt with swans: nothing to change
                return "nothing"
            r.ops.append(Swap(head[-1], base_phrase(p)))
            return "swap"
        # "thing comparative": "house way bigger", "the table white" (after "make the tea green and")
        ws_p = p.split()
        for k in range(len(ws_p) - 1, 0, -1):
            thing, rest_adj = " ".join(ws_p[:k]), " ".join(ws_p[k:])
            adjs = adjective_list(rest_adj)
            known = any(find_phrase(parse_tag(t.text), thing, loose=True) for t in tokenize(r.prompt))
            if adjs and one_phrase(thing) and (known or r.kind == "set"):
                return self._adjectives(thing, adjs, r, strong, weak)
        if p in ("outdoors", "outside", "indoors", "inside"):
            # "outdoors instead": where the subject is changes, not what it is
            r.ops.append(Relocate("", p))
            return "put"
        if r.instead and has_noun(p):
            r.ops.append(Swap(None, base_phrase(text)))
            return "swap"
        r.ops.append(Add(base_phrase(p), strong))
        return "add"
