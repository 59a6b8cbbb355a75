"""
The rule-based feedback interpreter: plain-English feedback -> operations over the prompt model -> Changes.

Each clause of the feedback is read into operations (set an attribute, swap, restyle, add, remove, weight, keep).
A clause no pattern maps is reported back ("I did not understand: ...") and changes nothing: only content an
operation produced reaches the prompt, never the words of the request.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache

from orchestrator.llm.changes import Changes
from orchestrator.llm.lexicon import (
    DETERMINERS,
    article_for,
    base_adjective,
    is_adjective,
    is_base_verb,
    is_noun,
    is_plural,
    is_verb_only,
    lemma,
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
    Borrow,
    DropAttribute,
    Fix,
    Keep,
    Look,
    Operation,
    Relocate,
    Remove,
    Restyle,
    SetAttribute,
    Swap,
    Weight,
    compile_operations,
)
from orchestrator.llm.prompt_model import APPEARANCE_VERBS, Role, find_phrase, is_clean_phrase, parse_tag, term_of
from orchestrator.llm.prompt_text import matches, normalize, stem, tokenize
from orchestrator.llm.vocab import ADJECTIVES, ASPECT_NOUNS, LOOKS, OPPOSITES, QUALITY_TAGS

#: phrases whose "and" is part of the phrase, not a list separator
_COMPOUNDS = ("black and white", "salt and pepper", "rock and roll", "light and shadow", "sword and shield")
_QUOTE = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<![\w])'([^']+)'(?![\w])")
_BORROW = re.compile(
    r"(?:\b(?:more\s+|a\s+bit\s+more\s+)?(?:like|similar\s+to|closer\s+to|same\s+as|as\s+in|based\s+on|go\s+with)\s+"
    r"(?:the\s+)?(?:#\s*|number\s+|no\.?\s*|image\s+|pic(?:ture)?\s+|one\s+)?|#\s*|\bnumber\s+|\bimage\s+)(\d{1,3})\b"
)
_STRONG = re.compile(r"\b(really|very|much|way|a lot|lots|super|extremely|so much|tons)\b|!!|[A-Z]{4,}")
_WEAK = re.compile(r"\b(a bit|a little|slightly|somewhat|a touch|a tad|kinda|kind of)\b")
_INTENSIFIERS = re.compile(
    r"\b(?:really|very|extremely|so much|a bit|a little|slightly|somewhat|a touch|a tad|kinda|kind of|even|just|"
    r"quite|super|(?:much|way|a lot)(?= (?:more|less|too|\w+er)\b))\b(?!\s*$)"
)
_LEADING = re.compile(
    r"^(?:please|pls|plz|can you|could you|would you|maybe|perhaps|i think|i want you to|"
    r"let's|lets|try to|try|just|also|and|but|so|ok|okay|now|then|we need to|you should|kindly|hmm+|"
    r"i'd prefer|i prefer|how about|what about|go for|actually|oh|ah|yeah|yes|no,|hey|only|rather|i'd rather have|"
    r"i'd rather|i would rather)\s+"
)
_TRAILING = re.compile(
    r"\s+(?:please|pls|too|as well|instead|a bit|a little|in it|to it|in there|anymore|overall|next to it|"
    r"for me|if possible|if you can|thanks|thank you|though|maybe|again|at all|completely|entirely|altogether|"
    r"for now|somehow|i guess|i think|i suppose|perhaps|or something|if that makes sense|lol|haha)$"
)
_GROUP_COMMA = "\x1f"
_SPLIT = re.compile(r"\s*[,;.!?\n]+\s*|\s+(?:and|or|nor|but|also|plus|then|while|&)\s+")
_SENTIMENT = {
    "nice", "good", "great", "cool", "perfect", "love it", "awesome", "ok", "okay", "thanks", "thank you", "wow",
    "lol", "yes", "no", "hmm", "meh", "amazing", "beautiful", "more", "less", "it", "this", "that", "one", "better",
    "again", "same", "fine", "so", "please", "very", "really", "much", "like", "good job", "almost", "close",
    "not sure", "i'm not sure", "im not sure", "unsure", "idk", "dunno", "i don't know", "not bad", "love this",
    "i like it", "i love it", "nice one", "great job", "well done", "getting there", "almost there",
    "keep it", "keep that", "looks good", "looks great", "this is great", "this is good", "gorgeous", "lovely",
    "nope", "nah", "yep", "yeah", "eh", "ugh", "hm", "hmmm", "ok then", "sure", "cool cool", "alright",
}  # fmt: skip
_SUBJECT = (
    r"(?:it|him|her|them|he|she|they|this|that|the (?:subject|character|person|animal|guy|thing|image|"
    r"picture|scene|whole thing|whole image|photo|shot))"
)

_KEEP = re.compile(
    r"^(?:keep|preserve|retain|maintain|leave|don't change|do not change|don't touch|do not touch|don't lose|"
    r"do not lose|stick with|stay with|hold on to)\s+(.+?)(?:\s+(?:as is|as it is|the same|unchanged|intact|alone|"
    r"untouched|as they are|like that|exactly))?$"
)
_LIKE = re.compile(
    r"^(?:i\s+)?(?:like|love|liked|loved|adore)\s+(?:the\s+|how the\s+)(.+?)(?:\s+(?:is|are|looks?).*)?$"
)
_PRAISE = re.compile(
    r"^(?:the\s+)?(.+?)\s+(?:is|are|looks?|look)\s+(?:perfect|great|good|nice|fine|right|spot on|gorgeous|lovely|"
    r"beautiful|amazing|awesome|excellent|fantastic|cool)$"
)
_DISLIKE = re.compile(r"^(?:i\s+)?(?:don't like|do not like|dislike|hate|not a fan of)\s+(?:the\s+|how the\s+)?(.+)$")
_FIX = re.compile(
    r"^(?:fix|repair|correct)\s+(?:the\s+)?(.+)$|^(?:the\s+)?(.+?)\s+(?:looks?|is|are)\s+(?:weird|wrong|off|broken|"
    r"deformed|bad|messed up|strange|mangled)$"
)
_REPLACE = re.compile(
    r"^(?:replace|swap|switch|change|turn|transform|exchange)\s+(?:out\s+)?(.+?)\s+(?:with|for|to|into|by)\s+(.+)$"
)
_INSTEAD = re.compile(r"^(.+?)\s+instead of\s+(.+)$")
_INSTEAD_FIRST = re.compile(r"^instead of\s+(.+?)\s+(?:use|have|make it|do|go with|put)?\s*(.+)$")
_PUT = re.compile(
    r"^(?:put|move|place|set|bring|take|send|have)\s+(.+?)\s+(?:(?:outside|inside|back|over|out|somewhere)\s+)?"
    r"(in|on|at|to|into|onto|under|by|near|inside|outside|beside|next to|in front of|underneath)\s+(.+)$"
)
_MAKE = re.compile(r"^(?:make|render|paint|draw|turn|color|colour|have)\s+(.+)$")
_BE = re.compile(
    r"^(?:can|could)\s+(.+?)\s+be\s+(.+)$|^(.+?)\s+(?:should|must|needs? to|has to|have to|ought to|could|can|"
    r"would look better|would be better)\s+(?:be\s+|look\s+|feel\s+|seem\s+|get\s+)?(.+)$"
)
_TOO = re.compile(
    r"^(?:it'?s\s+|it is\s+)?(?:(.+?)\s+(?:is|are|looks?|seems?|feels?|'s|was|were)\s+)?"
    r"(?:way\s+|much\s+|a bit\s+|a little\s+|far\s+)?too\s+(.+)$"
)
_NOT_ENOUGH = re.compile(r"^(?:(?:.+?)\s+(?:is|are|isn't|aren't|looks?|is not|are not)\s+)?not\s+(.+?)\s+enough$")
_WANT_TO_BE = re.compile(
    r"^(?:i\s+(?:want|need|would like|'d like|wish)|i'd like|we\s+(?:want|need)|i'd love|i would love)\s+(.+?)\s+"
    r"(?:to be|to look|to get|to seem|to feel)\s+(.+)$"
)
_WANT = re.compile(
    r"^(?:i\s+(?:want|need|would like|'d like)|i'd like|we\s+(?:want|need))\s+(.+?)\s+((?:more|less)\s+\S+|\S+)$"
)
_THERE = re.compile(
    r"^(?:there should be|there needs to be|there could be|there must be|i'd like there to be|(?:can|could|may)\s+"
    r"(?:she|he|it|they|we|i|you|the\s+\w+)\s+(?:have|get|hold|wear|carry))\s+(.+)$"
)
_PUT_THERE = re.compile(r"^(?:put|place|add|have|use)\s+(.+?)\s+(?:there|here|in its place|in their place)$")
_GIVE = re.compile(r"^give\s+(it|him|her|them|the\s+\w+)\s+(.+)$")
_NEEDS = re.compile(r"^(?:the\s+)?(.+?)\s+(?:needs|could use|should have|must have|deserves)\s+(.+)$")
_REMOVE = re.compile(
    r"^(?:no|without|remove|get rid of|lose|drop|delete|take out|take away|ditch|eliminate|erase|no more|"
    r"don't want|do not want|don't include|do not include|don't add|avoid|cut out|kill|nix|exclude|skip|"
    r"don't need|do not need|don't show|do not show|hide|not|i don't want|i do not want)\s+(.+)$"
)
_TAKE_AWAY = re.compile(r"^(?:take|get|move|put)\s+(.+?)\s+(?:away|out|off)(?:\s+of (?:it|the \w+))?$")
_GO = re.compile(
    r"^(?:the\s+)?(.+?)\s+(?:has to go|have to go|must go|should go|needs to go|need to go|can go|is distracting|"
    r"are distracting|is ugly|are ugly|ruins it|ruin it|is annoying|are annoying|is pointless|is unnecessary|"
    r"shouldn't be there|should not be there|doesn't belong|don't belong)$"
)
_TOO_MUCH = re.compile(r"^(?:the\s+)?(.+?)\s+(?:is|are)\s+(?:too much|too strong|overpowering|too loud|too heavy)$")
_LESS = re.compile(
    r"^(?:less|fewer|reduce|tone down|lower|decrease|dial back|dial down|weaker|not so much|not as much|"
    r"not so|not as|not that|soften|subtler|subtle|minimi[sz]e)\s+(.+)$"
)
_MORE = re.compile(
    r"^(?:more|increase|boost|enhance|emphasi[sz]e|stronger|strengthen|amp up|crank up|pump up|extra|"
    r"heavier|intensify|push|bring out|highlight|focus on|up the|turn up|denser)\s+(.+)$"
)
_ADD = re.compile(
    r"^(?:add|with|include|insert|throw in|let's have|we need|needs|need|there should be|there needs to be|"
    r"there could be|show|bring in|introduce|could use|it needs|it could use|plus|can we get|can we have|"
    r"could we get|could we have|can i get|can i have|can you add|put in|i want to see|i'd like to see|"
    r"i want|i'd like|i would like|want|maybe add)\s+(.+)$"
)
#: "so cute!!": a compliment about the image, not a request for more of it
_COMPLIMENT = re.compile(
    r"(?:so+|very|really|super|soo+|how|omg)\s+(?:cute|pretty|good|nice|cool|beautiful|lovely|awesome|great|gorgeous|"
    r"adorable|amazing|sweet|fun|funny)\W*"
)
#: "make the cat wear a crown", "let the fox carry a lantern", "get him to smile", "can the rabbit wear a hat":
#: someone (a pronoun or a noun phrase) and what they should do
_CAUSE = re.compile(
    r"^(?:make|have|let|get(?! rid\b)|help|can|could|(?:i|we)\s+(?:want|need|would like|'d like|would love|'d love)|"
    r"i'?d like|i'?d love)\s+(.+)$"
)
#: "have the cat look at the camera": a look that is an action, not an appearance ("make it look like a sketch")
_LOOK_ACTION = frozenset({"at", "up", "down", "into", "toward", "towards", "away", "out", "over", "around"})
#: "put a hat on him", "give her a scarf": how a wearable joins its wearer
_WORN_VERB = "wearing"
#: "X should wear Y": verbs whose object joins the thing instead of replacing it
_ATTACH_VERBS = frozenset({"wear", "hold", "carry", "have", "has", "eat", "ride", "play", "read", "drink", "use"})
_ARTICLE = re.compile(r"^(?:the|a|an|some|any|all|those|these|that|this|of the|more of the|his|her|their|its)\s+")
_CONTEXT_PP = re.compile(r"\s+(?:on|of|in|for|to)\s+(?:the\s+)?(?:\w+'s\s+)?\w+$")


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What the rules read from feedback: the operations, the Changes they compile to, the clauses not understood."""

    operations: tuple[Operation, ...]
    changes: Changes
    not_understood: tuple[str, ...] = ()


@dataclass
class _Reading:
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


def subject_head(prompt: str) -> str | None:
    """The subject's head noun phrase: 'a red fox' in 'masterpiece, a red fox sitting in snow, blurry'."""
    for t in tokenize(prompt):
        if t.text.lower() in QUALITY_TAGS or t.text.lower().startswith("score_"):
            continue
        tag = parse_tag(t.text)
        if not tag.phrases:
            return None
        np = tag.phrases[0]
        return " ".join(tag.words[np.start : np.end])
    return None


class RuleInterpreter:
    """Turns feedback into operations over the prompt model with hand-written patterns (the no-LLM path)."""

    def interpret(self, feedback: str, prompt: str = "", stage_numbers: Collection[int] = ()) -> Changes:
        """Parse feedback about an image made from `prompt`; "#N" only counts for N in stage_numbers (if given)."""
        return self.read(feedback, prompt, stage_numbers).changes

    def read(self, feedback: str, prompt: str = "", stage_numbers: Collection[int] = ()) -> Interpretation:
        """The operations, their Changes, and the clauses no pattern could map."""
        r = _Reading(prompt)
        text, quotes = _extract_quotes(feedback)
        for m in _BORROW.finditer(text):
            n = int(m.group(1))
            if not stage_numbers or n in stage_numbers:
                r.ops.append(Borrow(n))
        text = _BORROW.sub(" ", text)
        shout = "!!" in feedback
        low = _normalise(text)
        for comp in _COMPOUNDS:
            low = low.replace(comp, comp.replace(" and ", "_and_"))
        # "remove {cat,dog}" names a permutation group: its commas do not separate clauses
        low = re.sub(r"\{[^{}]*\}", lambda m: m.group(0).replace(",", _GROUP_COMMA), low)
        pos = 0
        seps: list[re.Match[str] | None] = [*_SPLIT.finditer(low), None]
        for sep in seps:
            end = sep.start() if sep else len(low)
            raw = low[pos:end].replace("_and_", " and ").replace(_GROUP_COMMA, ",")
            joined = sep is not None and sep.group(0).strip() in {"and", "or", "nor", "&", "plus"}
            # "!!" strengthens the clause it ends (or all, when it ends the whole message)
            bang = "!!" in (sep.group(0) if sep else "") or (sep is None and shout and "!!" not in low[:end])
            self._clause(raw, quotes, r, bang)
            r.joined = joined
            if not joined:
                r.kind = r.kind if r.kind in ("remove", "keep", "add", "instead") else None
            pos = sep.end() if sep else len(low)
        return Interpretation(tuple(r.ops), compile_operations(prompt, r.ops), tuple(dict.fromkeys(r.unknown)))

    # ------------------------------------------------------------------ one clause

    def _clause(self, raw: str, quotes: list[str], r: _Reading, shout: bool) -> None:
        said = _restore(raw.strip(), quotes)
        r.instead = bool(re.search(r"\binstead\s*[.!?]*$", raw.strip()))
        clause = raw.strip()
        if _COMPLIMENT.fullmatch(clause):
            return
        strong = shout or bool(_STRONG.search(clause))
        weak = bool(_WEAK.search(clause))
        clause = _tidy(clause)
        if (
            not clause
            or clause in _SENTIMENT
            or re.fullmatch(
                r"(?:it|this|that)(?:'s| is| looks)? (?:good|great|nice|"
                r"perfect|fine|ok|okay|better|close|amazing)",
                clause,
            )
        ):
            return
        before = list(r.ops)
        if re.match(r"^(?:just|only)\s+(?:the|a|an|my|this)\s+", raw.strip()) and r.kind == "remove":
            r.ops.append(Keep(_ARTICLE.sub("", clause)))
            r.kind = "nothing"
            return
        kind = self._read(clause, quotes, r, strong, weak)
        if kind is None or (r.ops == before and kind not in ("nothing", "instead")):
            r.unknown.append(said)
            r.kind = None
            return
        r.kind = kind

    def _read(self, clause: str, quotes: list[str], r: _Reading, strong: bool, weak: bool) -> str | None:
        def phrase(s: str) -> str:
            return _restore(_ARTICLE.sub("", _tidy(s)), quotes)

        if m := _KEEP.match(clause):
            what = phrase(m.group(1))
            if what in ("it", "that", "this", "them", "the rest"):
                # "keep it" after praise: the praise already said it
                return "nothing"
            r.ops.append(Keep("everything" if what in ("anything", "everything", "it all", "all") else what))
            return "keep"
        if (m := _LIKE.match(clause)) or (m := _PRAISE.match(clause)):
            what = phrase(m.group(1))
            if re.fullmatch(_SUBJECT, what) or what in ("it", "everything", "this", "that"):
                return "nothing"
            r.ops.append(Keep(what))
            return "keep"
        if m := _NOT_ENOUGH.match(clause):
            return self._more(phrase(m.group(1)), r, strong=True, weak=False)
        if m := _DISLIKE.match(clause):
            return self._remove(phrase(m.group(1)), r)
        if m := _FIX.match(clause):
            r.ops.append(Fix(phrase(m.group(1) or m.group(2))))
            return "fix"
        if m := _GO.match(clause):
            return self._remove(phrase(m.group(1)), r)
        if m := _TAKE_AWAY.match(clause):
            return self._remove(phrase(m.group(1)), r)
        if m := re.fullmatch(r"instead of\s+(.+)", clause):
            r.target = phrase(m.group(1))
            return "instead"
        if m := _INSTEAD_FIRST.match(clause):
            return self._swap(phrase(m.group(1)), _restore(_tidy(m.group(2)), quotes), r)
        if m := _INSTEAD.match(clause):
            return self._swap(phrase(m.group(2)), _restore(_tidy(m.group(1)), quotes), r)
        if (m := _CAUSE.match(clause)) and (kind := self._action(_restore(m.group(1), quotes), r)):
            return kind
        if m := _PUT.match(clause):
            return self._put(phrase(m.group(1)), m.group(2), _restore(_tidy(m.group(3)), quotes), r)
        if m := _REPLACE.match(clause):
            return self._swap(phrase(m.group(1)), _restore(_tidy(m.group(2)), quotes), r)
        if m := _PUT_THERE.match(clause):
            # "remove the lighthouse and put a windmill there": the removal was a swap
            new = _restore(_tidy(m.group(1)), quotes)
            last = r.ops[-1] if r.ops else None
            if isinstance(last, Remove) and is_clean_phrase(new) and _has_noun(new):
                r.ops[-1] = Swap(last.thing, new)
                return "swap"
            return self._add(phrase(m.group(1)), r, strong)
        if m := _THERE.match(clause):
            return self._add(phrase(m.group(1)), r, strong)
        if m := _GIVE.match(clause):
            given = phrase(m.group(2))
            return self._put_on(given, "on", m.group(1), r) or self._add(given, r, strong)
        if m := _TOO_MUCH.match(clause):
            r.ops.append(Weight(phrase(m.group(1)), -1))
            return "less"
        if m := _TOO.match(clause):
            return self._too(m.group(1), phrase(m.group(2)), r, strong)
        if m := _MAKE.match(clause):
            return self._make(m.group(1), quotes, r, strong, weak)
        if m := _BE.match(clause):
            thing = m.group(1) or m.group(3)
            what = m.group(2) or m.group(4)
            return self._describe(phrase(thing), _restore(what, quotes), r, strong, weak)
        if m := _LESS.match(clause):
            return self._less(phrase(m.group(1)), r, strong)
        if m := _REMOVE.match(clause):
            return self._remove(phrase(m.group(1)), r)
        if m := _MORE.match(clause):
            return self._more(phrase(m.group(1)), r, strong, weak)
        if m := _NEEDS.match(clause):
            return self._add(phrase(m.group(2)), r, strong)
        if m := _WANT_TO_BE.match(clause):
            return self._describe(phrase(m.group(1)), _restore(m.group(2), quotes), r, strong, weak)
        if m := _WANT.match(clause):
            # "I want the background sharp": a thing and how it should be
            thing, what = phrase(m.group(1)), _restore(m.group(2), quotes)
            named = _is_thing(thing) or re.fullmatch(_SUBJECT, thing)
            if named and (_adjectives(re.sub(r"^(?:more|less)\s+", "", what)) or term_of(what)):
                return self._describe(thing, what, r, strong, weak)
        if m := _ADD.match(clause):
            return self._add(phrase(m.group(1)), r, strong)
        # a bare phrase: a look ("warmer light"), a style term, a thing with new attributes, or a continued list
        return self._bare(clause, quotes, r, strong, weak)

    # ------------------------------------------------------------------ readers

    def _remove(self, thing: str, r: _Reading) -> str | None:
        if not thing or re.fullmatch(_SUBJECT, thing):
            return None
        lead = thing.split()[0] if thing.split() else ""
        if lead in ("more", "less") or not _is_thing(thing) or not is_clean_phrase(thing):
            return None
        known = any(matches(t.text, thing) for t in tokenize(r.prompt))
        if not known and len(split_words(thing)) > 4:
            # a long clause the prompt does not have is a sentence, not a thing to remove
            return None
        r.ops.append(Remove(thing))
        return "remove"

    def _add(self, thing: str, r: _Reading, strong: bool) -> str | None:
        thing = re.sub(r"^(?:more|another|extra|some more)\s+", "", thing)
        thing = re.sub(r"\s+(?:next to|beside|near|behind|in front of|around|on)\s+(?:it|him|her|them)$", "", thing)
        found = term_of(thing)
        if found:
            r.ops.append(Restyle(*found))
            return "add"
        if not is_clean_phrase(thing):
            return None
        r.ops.append(Add(_base_phrase(thing), strong))
        return "add"

    def _swap(self, old: str, new: str, r: _Reading) -> str | None:
        new = _ARTICLE.sub(lambda m: m.group(0) if m.group(0).strip() in ("a", "an") else "", new).strip()
        if re.fullmatch(_SUBJECT, old) or old in ("everything", "the image"):
            return self._make_into(None, new, r, False, False)
        exists = any(find_phrase(parse_tag(t.text), old, loose=True) for t in tokenize(r.prompt))
        # "change the dress to a blue one": a new attribute, not a new thing
        one = re.fullmatch(r"(?:a|an|the)?\s*(.+?)\s+one", new)
        if one and _adjectives(one.group(1)):
            r.ops.append(SetAttribute(old, tuple(_adjectives(one.group(1)) or ())))
            return "set"
        adjs = _adjectives(new)
        if adjs and exists:
            r.ops.append(SetAttribute(old, tuple(adjs)))
            return "set"
        if not exists:
            found = term_of(new)
            if found:
                r.ops.append(Restyle(*found))
                return "style"
        if not is_clean_phrase(new) or not _has_noun(new):
            return None
        r.ops.append(Swap(old, new))
        return "swap"

    def _action(self, rest: str, r: _Reading) -> str | None:
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
            subject = bool(re.fullmatch(_SUBJECT, who))
            thing = None if subject else _ARTICLE.sub("", who)
            if thing is not None and (not _is_thing(thing) or not _one_phrase(thing) or not _has_noun(thing)):
                continue
            if thing is not None and _names_subject(thing, r.prompt):
                thing = None
            return self._do(thing, verb, obj, r)
        return None

    def _do(self, thing: str | None, verb: str, obj: str, r: _Reading) -> str | None:
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

    def _put_on(self, what: str, prep: str, wearer: str, r: _Reading) -> str | None:
        """'put a party hat on the dog', 'put a hat on him': a wearable put on someone is worn, not a new place."""
        tag = parse_tag(what)
        head = tag.head(tag.phrases[-1]) if tag.phrases else ()
        if prep != "on" or not head or head[-1].lower() not in lexicon().wearables or not is_clean_phrase(what):
            return None
        who = _ARTICLE.sub("", wearer.strip())
        # "on her head": the body part's owner wears it
        owned = re.fullmatch(r"(?:his|her|their|its)\s+\S+", wearer.strip())
        if owned or re.fullmatch(_SUBJECT, wearer.strip()) or _names_subject(who, r.prompt):
            target = None
        elif any(find_phrase(parse_tag(t.text), who, loose=True) for t in tokenize(r.prompt)):
            target = who
        else:
            return None
        r.ops.append(Attach(target, f"{_WORN_VERB} {_with_article(what)}"))
        r.target = target
        return "set"

    def _put(self, who: str, prep: str, place: str, r: _Reading) -> str | None:
        prep = {"to": "in", "into": "in", "onto": "on", "inside": "in"}.get(prep, prep)
        worn = self._put_on(who, prep, place, r)
        if worn:
            return worn
        if not is_clean_phrase(place):
            return None
        if re.fullmatch(_SUBJECT, who) or who in ("him", "her", "them", "it") or _names_subject(who, r.prompt):
            r.ops.append(Relocate(prep, place))
            return "put"
        if is_clean_phrase(f"{who} {prep} {place}"):
            r.ops.append(Add(f"{who} {prep} {place}"))
            return "add"
        return None

    def _make(self, rest: str, quotes: list[str], r: _Reading, strong: bool, weak: bool) -> str | None:
        rest = _restore(rest, quotes)
        possessive = re.match(r"^(?:his|her|their|its)\s+\S+\s+\S+", rest)
        m = re.match(rf"^{_SUBJECT}\s+(.*)$", rest) or re.match(r"^(?:everything|all)\s+(.*)$", rest)
        if m and not possessive:
            return self._make_into(None, m.group(1), r, strong, weak)
        # "make the sky purple", "make her hair blonde", "make the owl's eyes glow": the shortest thing that fits
        ws = rest.split()
        for k in range(1, len(ws)):
            thing, what = " ".join(ws[:k]), " ".join(ws[k:])
            thing = _ARTICLE.sub("", thing)
            if not thing or not _is_thing(thing) or not _one_phrase(thing):
                continue
            if (
                _adjectives(_plain(what))
                or _verb(what)
                or term_of(what)
                or re.match(r"^(?:a|an|into|look|more|less)\b", what)
            ):
                return self._make_into(thing, what, r, strong, weak)
            if len(what.split()) == 1 and is_noun(what) and what not in DETERMINERS:
                # "make the pot terracotta", "make the walls brick": a noun said as the thing's material
                r.ops.append(SetAttribute(thing, (what,)))
                return "set"
        return None

    def _make_into(self, thing: str | None, what: str, r: _Reading, strong: bool, weak: bool) -> str | None:
        """'make <thing> <what>': <what> is a look, a style, an adjective list, a verb, or a new noun phrase."""
        simile = bool(re.match(r"^(?:(?:look|feel|seem)\s+(?:more\s+)?)?like\s", _tidy(what)))
        what = _plain(what)
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
        adjs = _adjectives(what)
        if adjs is not None:
            return self._adjectives(thing, adjs, r, strong, weak)
        quality, _, part = what.partition(" with ")
        if part and _adjectives(quality) and is_clean_phrase(part) and _has_noun(part):
            # "white with red laces": a quality and a part
            self._adjectives(thing, _adjectives(quality) or [], r, strong, weak)
            r.ops.append(Attach(thing, f"with {part}"))
            return "set"
        verb = _verb(what)
        if verb:
            r.ops.append(SetAttribute(thing, (participle(verb),)))
            return "set"
        first, _, rest = what.partition(" ")
        first = verb_lemma(first) if first.endswith("ing") else first
        if first in _ATTACH_VERBS and rest and is_clean_phrase(rest) and _has_noun(rest):
            # "he should wear a scarf": the thing gets the phrase, it is not replaced by it
            verb = "with" if first in ("have", "has") else participle(first)
            r.ops.append(Attach(thing, f"{verb} {rest}"))
            return "set"
        rest_adjs = _adjectives(rest) if rest else None
        if _verb(first) and rest_adjs:
            r.ops.append(SetAttribute(thing, (*rest_adjs, participle(first))))
            return "set"
        if not is_clean_phrase(what) or not _has_noun(what):
            return None
        if thing is None:
            r.ops.append(Swap(None, what))
            return "swap"
        r.ops.append(Swap(thing, what))
        return "swap"

    def _adjectives(self, thing: str | None, adjs: list[str], r: _Reading, strong: bool, weak: bool) -> str:
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

    def _describe(self, thing: str, what: str, r: _Reading, strong: bool, weak: bool) -> str | None:
        """'<thing> should be <what>' and its kin."""
        what = _tidy(what)
        what = re.sub(r"^(?:made of|made from|in)\s+", "", what)
        subject = re.fullmatch(_SUBJECT, thing) or thing in ("it", "everything", "the image")
        return self._make_into(None if subject else thing, what, r, strong, weak)

    def _too(self, thing: str | None, what: str, r: _Reading, strong: bool) -> str | None:
        """'the grass is too tall' -> short grass; 'too bright' -> the dark look; 'too many people' -> fewer."""
        what = _tidy(what)
        many = re.match(r"^(?:many|much)\s+(.+)$", what)
        if many:
            r.ops.append(Weight(_ARTICLE.sub("", many.group(1)), -2 if strong else -1))
            return "less"
        target = (
            None
            if thing is None or re.fullmatch(_SUBJECT, _ARTICLE.sub("", thing.strip()))
            else _ARTICLE.sub("", thing.strip())
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

    def _less(self, what: str, r: _Reading, strong: bool) -> str | None:
        ws = what.split()
        if not ws:
            return None
        style = term_of(what)
        if style and _in_prompt(style[1], r.prompt):
            # "less cartoony" of "a cartoon frog": the style word goes
            r.ops.append(DropAttribute(style[1]))
            return "less"
        key = ADJECTIVES.get(" ".join(ws[:2])) or ADJECTIVES.get(ws[0])
        if any(_has_modifier(t.text, ws[0]) for t in tokenize(r.prompt)):
            r.ops.append(DropAttribute(ws[0]))
            return "less"
        if len(ws) == 1:
            # "less mist" of "a misty lake": the adjective made of the word goes
            made_of = _modifier_by_stem(r.prompt, ws[0])
            if made_of:
                r.ops.append(DropAttribute(made_of))
                return "less"
        if key and key in OPPOSITES and all(w in ASPECT_NOUNS for w in ws[1:]):
            r.ops.append(DropAttribute(ws[0]))
            return "less"
        if not _is_thing(what):
            return None
        r.ops.append(Weight(what, -2 if strong else -1))
        return "less"

    def _more(self, what: str, r: _Reading, strong: bool, weak: bool, thing: str | None = None) -> str | None:
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
        adjs = _adjectives(what)
        if adjs and len(adjs) == len(ws):
            return self._adjectives(thing, adjs, r, strong, weak)
        if not is_clean_phrase(what):
            return None
        # "more fog" of a prompt without fog: the engineer adds it already weighted up
        r.ops.append(Weight(_base_phrase(what), 2 if strong else 1))
        return "more"

    def _bare(self, clause: str, quotes: list[str], r: _Reading, strong: bool, weak: bool) -> str | None:
        text = _restore(clause, quotes)
        p = _ARTICLE.sub("", text)
        if r.kind == "set" and _adjectives(p):
            return self._adjectives(r.target, _adjectives(p) or [], r, strong, weak)
        if r.kind == "instead" and r.target:
            return self._swap(r.target, text, r)
        last = r.ops[-1] if r.ops else None
        pose = _verb(p)
        if r.joined and isinstance(last, Attach) and pose:
            # "make her hold a cup and smile": the same doer does the second thing too
            r.ops.append(SetAttribute(last.target, (participle(pose),)))
            return "set"
        if r.joined and isinstance(last, Attach) and is_clean_phrase(p) and _has_noun(p):
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
        found = term_of(clause) or _term_inside(clause)
        if found:
            r.ops.append(Restyle(*found))
            return "style"
        # "no people and cars", "keep the dress, the hat": the verb carries over to the next item
        if r.kind == "remove" and _is_thing(p) and (r.joined or any(matches(t.text, p) for t in tokenize(r.prompt))):
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
        adjs = _adjectives(p)
        if adjs and len(adjs) == len(p.split()):
            return self._adjectives(None, adjs, r, strong, weak)
        if not is_clean_phrase(p) or not _is_thing(p) or not any("NOUN" in parts_of_speech(w) for w in p.split()):
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
            r.ops.append(Swap(head[-1], _base_phrase(p)))
            return "swap"
        # "thing comparative": "house way bigger", "the table white" (after "make the tea green and")
        ws_p = p.split()
        for k in range(len(ws_p) - 1, 0, -1):
            thing, rest_adj = " ".join(ws_p[:k]), " ".join(ws_p[k:])
            adjs = _adjectives(rest_adj)
            known = any(find_phrase(parse_tag(t.text), thing, loose=True) for t in tokenize(r.prompt))
            if adjs and _one_phrase(thing) and (known or r.kind == "set"):
                return self._adjectives(thing, adjs, r, strong, weak)
        if p in ("outdoors", "outside", "indoors", "inside"):
            # "outdoors instead": where the subject is changes, not what it is
            r.ops.append(Relocate("", p))
            return "put"
        if r.instead and _has_noun(p):
            r.ops.append(Swap(None, _base_phrase(text)))
            return "swap"
        r.ops.append(Add(_base_phrase(p), strong))
        return "add"


# ---------------------------------------------------------------------- helpers


def _normalise(text: str) -> str:
    low = text.lower().replace("\u2019", "'").replace(" & ", " and ")
    low = re.sub(r"\bnot (?:so|as|that) (?:much|many)\b", "less", low)
    synonyms = lexicon().synonyms
    # typos and short forms ("remvoe", "colorfull", "dont") become the words the patterns know
    return re.sub(r"[a-z']+", lambda m: synonyms.get(m.group(0), m.group(0)), low)


def _extract_quotes(text: str) -> tuple[str, list[str]]:
    quotes: list[str] = []

    def sub(m: re.Match[str]) -> str:
        quotes.append(next(g for g in m.groups() if g is not None))
        return f" qq{len(quotes) - 1}qq "

    return _QUOTE.sub(sub, text), quotes


def _restore(s: str, quotes: list[str]) -> str:
    # a quoted phrase comes back exactly as typed (case and all)
    out = re.sub(r"\s*qq(\d+)qq\s*", lambda m: f" {quotes[int(m.group(1))]} ", s)
    return re.sub(r"\s+", " ", out).strip()


def _tidy(clause: str) -> str:
    c = re.sub(r"\s+", " ", clause.strip().strip("\"'“”.,;:!?-")).strip()
    prev = None
    while prev != c:
        prev = c
        c = _LEADING.sub("", c)
        c = _TRAILING.sub("", c)
        c = _INTENSIFIERS.sub(_intensifier, c)
        c = re.sub(r"\s+", " ", c).strip().strip("?!.")
    return c


@cache
def _countable_things() -> frozenset[str]:
    lx = lexicon()
    return lx.wearables | lx.places | frozenset(lx.kinds) | frozenset(w for ws in lx.kinds.values() for w in ws)


def _intensifier(m: re.Match[str]) -> str:
    # "a little warmer" softens; "a little jacket", "a little house" is an article and a size of a thing
    if m.group(0) == "a little":
        following = m.string[m.end() :].split()
        if following and following[0] in _countable_things():
            return m.group(0)
    return " "


def _adjectives(text: str) -> list[str] | None:
    """'orange and fluffy' -> ['orange', 'fluffy']; 'matte black' -> ['matte black']; None when not all adjectives."""
    text = text.strip()
    if not text:
        return None
    if text.lower() in lexicon().modifier_class:
        return [text.lower()]
    parts = [p for p in re.split(r"\s*(?:,|\band\b|&)\s*", text) if p]
    out: list[str] = []
    for p in parts:
        if p in lexicon().modifier_class or p in ADJECTIVES:
            out.append(p)
            continue
        ws = p.split()
        if not ws or not all(w in lexicon().modifier_class or w in ADJECTIVES or _adjective_only(w) for w in ws):
            return None
        out.append(p)
    return out or None


def _adjective_only(word: str) -> bool:
    # "spotted", "bigger": adjectives even where they are verb forms too; "green" (also a noun) is curated
    pos = parts_of_speech(word)
    return "ADJ" in pos and ("NOUN" not in pos or word.endswith("er"))


def _plain(what: str) -> str:
    """'look more like a photo' -> 'a photo'; 'bigger than the cat' -> 'bigger' (the comparison only explains)."""
    what = _tidy(what)
    what = re.sub(r"^(?:look|feel|seem|be|appear)\s+(?:more\s+)?", "", what)
    what = re.sub(r"^(?:into|like)\s+", "", what)
    return re.sub(r"\s+(?:than|like|as in|similar to)\s+.*$", "", what)


def _one_phrase(text: str) -> bool:
    # "bridge", "owl's eyes", "her hair": one noun phrase, nothing else ("bridge golden like the" is not)
    tag = parse_tag(text)
    return len(tag.phrases) == 1 and tag.phrases[0].start == 0 and tag.phrases[0].end == len(tag.words)


def _has_noun(text: str) -> bool:
    # a head that is a noun and not a colour or other curated adjective ("a koala", not "glow blue"), and a phrase
    # that starts as a noun phrase does ("at night" is no thing to swap in)
    tag = parse_tag(text)
    if not tag.roles or tag.roles[0] not in (Role.DET, Role.MOD, Role.HEAD):
        return False
    heads = [w.lower() for p in tag.phrases for w in tag.words[p.head_start : p.end]]
    return any(is_noun(w) and w not in lexicon().modifier_class for w in heads)


def _verb(text: str) -> str | None:
    # "smile", "smile more", "smiling": a pose or expression the subject takes ("make it pop" is no pose)
    ws = re.sub(r"\s+(?:more|a lot|again|too|please)$", "", text.strip()).split()
    if len(ws) == 1 and is_verb_only(ws[0]) and lemma(ws[0]) in lexicon().pose_verbs:
        return ws[0]
    return None


def _is_thing(text: str) -> bool:
    ws = split_words(text)
    return bool(ws) and not all(w in DETERMINERS or w in ("more", "less", "it", "this", "that") for w in ws)


def _names_subject(who: str, prompt: str) -> bool:
    head = subject_head(prompt)
    return bool(head) and find_phrase(parse_tag(head or ""), who, loose=True) is not None


def _with_article(phrase: str) -> str:
    # "party hat" (its article stripped with the request's words) -> "a party hat"; plurals and mass nouns stay bare
    ws = phrase.split()
    if not ws or ws[0] in DETERMINERS or is_plural(ws[-1]):
        return phrase
    return f"{article_for(ws[0])} {phrase}"


def _base_phrase(text: str) -> str:
    # comparatives said of a new thing mean its plain form: "bigger waves" -> "big waves"
    ws = text.split()
    return " ".join(base_adjective(w) if i < len(ws) - 1 and w.endswith("er") else w for i, w in enumerate(ws))


def _term_inside(clause: str) -> tuple[str, str] | None:
    # "close up on the lion's face", "shot from above": a term with a pointer to what it is about
    stripped = _CONTEXT_PP.sub("", clause)
    stripped = re.sub(r"^(?:shot|seen|viewed|view)\s+", "", stripped)
    return term_of(stripped) if stripped != clause or stripped else None


def _in_prompt(term: str, prompt: str) -> bool:
    want = [lemma(w) for w in split_words(term)]
    return any(all(w in [lemma(x) for x in split_words(t.text)] for w in want) for t in tokenize(prompt))


def _modifier_by_stem(prompt: str, word: str) -> str | None:
    for t in tokenize(prompt):
        tag = parse_tag(t.text)
        for w, role in zip(tag.words, tag.roles, strict=True):
            if role is Role.MOD and stem(w) == stem(word):
                return w.lower()
    return None


def _has_modifier(text: str, word: str) -> bool:
    tag = parse_tag(text)
    target = lemma(word)
    return any(r is Role.MOD and lemma(w.lower()) == target for w, r in zip(tag.words, tag.roles, strict=True))
