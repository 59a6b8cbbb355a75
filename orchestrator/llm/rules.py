"""
The rule-based feedback interpreter: plain-English feedback -> operations over the prompt model -> Changes.

Each clause of the feedback is read into operations (set an attribute, swap, restyle, add, remove, weight, keep).
A clause no pattern maps is reported back ("I did not understand: ...") and changes nothing: only content an
operation produced reaches the prompt, never the words of the request.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from orchestrator.llm.changes import Changes
from orchestrator.llm.operations import (
    Borrow,
    Fix,
    Keep,
    Operation,
    Remove,
    Swap,
    Weight,
    compile_operations,
)
from orchestrator.llm.prompt_model import is_clean_phrase, term_of
from orchestrator.llm.rule_phrases import ARTICLE, SUBJECT, adjective_list, has_noun, is_thing
from orchestrator.llm.rule_readers import ClauseReaders, Reading
from orchestrator.llm.rule_text import extract_quotes, normalise_feedback, restore_quotes, tidy_clause

#: phrases whose "and" is part of the phrase, not a list separator
_COMPOUNDS = ("black and white", "salt and pepper", "rock and roll", "light and shadow", "sword and shield")
_BORROW = re.compile(
    r"(?:\b(?:more\s+|a\s+bit\s+more\s+)?(?:like|similar\s+to|closer\s+to|same\s+as|as\s+in|based\s+on|go\s+with)\s+"
    r"(?:the\s+)?(?:#\s*|number\s+|no\.?\s*|image\s+|pic(?:ture)?\s+|one\s+)?|#\s*|\bnumber\s+|\bimage\s+)(\d{1,3})\b"
)
_STRONG = re.compile(r"\b(really|very|much|way|a lot|lots|super|extremely|so much|tons)\b|!!|[A-Z]{4,}")
_WEAK = re.compile(r"\b(a bit|a little|slightly|somewhat|a touch|a tad|kinda|kind of)\b")
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


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What the rules read from feedback: the operations, the Changes they compile to, the clauses not understood."""

    operations: tuple[Operation, ...]
    changes: Changes
    not_understood: tuple[str, ...] = ()


class RuleInterpreter(ClauseReaders):
    """Turns feedback into operations over the prompt model with hand-written patterns (the no-LLM path)."""

    def interpret(self, feedback: str, prompt: str = "", stage_numbers: Collection[int] = ()) -> Changes:
        """Parse feedback about an image made from `prompt`; "#N" only counts for N in stage_numbers (if given)."""
        return self.read(feedback, prompt, stage_numbers).changes

    def read(self, feedback: str, prompt: str = "", stage_numbers: Collection[int] = ()) -> Interpretation:
        """The operations, their Changes, and the clauses no pattern could map."""
        r = Reading(prompt)
        text, quotes = extract_quotes(feedback)
        for m in _BORROW.finditer(text):
            n = int(m.group(1))
            if not stage_numbers or n in stage_numbers:
                r.ops.append(Borrow(n))
        text = _BORROW.sub(" ", text)
        shout = "!!" in feedback
        low = normalise_feedback(text)
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

    def _clause(self, raw: str, quotes: list[str], r: Reading, shout: bool) -> None:
        said = restore_quotes(raw.strip(), quotes)
        r.instead = bool(re.search(r"\binstead\s*[.!?]*$", raw.strip()))
        clause = raw.strip()
        if _COMPLIMENT.fullmatch(clause):
            return
        strong = shout or bool(_STRONG.search(clause))
        weak = bool(_WEAK.search(clause))
        clause = tidy_clause(clause)
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
            r.ops.append(Keep(ARTICLE.sub("", clause)))
            r.kind = "nothing"
            return
        kind = self._read(clause, quotes, r, strong, weak)
        if kind is None or (r.ops == before and kind not in ("nothing", "instead")):
            r.unknown.append(said)
            r.kind = None
            return
        r.kind = kind

    def _read(self, clause: str, quotes: list[str], r: Reading, strong: bool, weak: bool) -> str | None:
        def phrase(s: str) -> str:
            return restore_quotes(ARTICLE.sub("", tidy_clause(s)), quotes)

        if m := _KEEP.match(clause):
            what = phrase(m.group(1))
            if what in ("it", "that", "this", "them", "the rest"):
                # "keep it" after praise: the praise already said it
                return "nothing"
            r.ops.append(Keep("everything" if what in ("anything", "everything", "it all", "all") else what))
            return "keep"
        if (m := _LIKE.match(clause)) or (m := _PRAISE.match(clause)):
            what = phrase(m.group(1))
            if re.fullmatch(SUBJECT, what) or what in ("it", "everything", "this", "that"):
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
            return self._swap(phrase(m.group(1)), restore_quotes(tidy_clause(m.group(2)), quotes), r)
        if m := _INSTEAD.match(clause):
            return self._swap(phrase(m.group(2)), restore_quotes(tidy_clause(m.group(1)), quotes), r)
        if (m := _CAUSE.match(clause)) and (kind := self._action(restore_quotes(m.group(1), quotes), r)):
            return kind
        if m := _PUT.match(clause):
            return self._put(phrase(m.group(1)), m.group(2), restore_quotes(tidy_clause(m.group(3)), quotes), r)
        if m := _REPLACE.match(clause):
            return self._swap(phrase(m.group(1)), restore_quotes(tidy_clause(m.group(2)), quotes), r)
        if m := _PUT_THERE.match(clause):
            # "remove the lighthouse and put a windmill there": the removal was a swap
            new = restore_quotes(tidy_clause(m.group(1)), quotes)
            last = r.ops[-1] if r.ops else None
            if isinstance(last, Remove) and is_clean_phrase(new) and has_noun(new):
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
            return self._describe(phrase(thing), restore_quotes(what, quotes), r, strong, weak)
        if m := _LESS.match(clause):
            return self._less(phrase(m.group(1)), r, strong)
        if m := _REMOVE.match(clause):
            return self._remove(phrase(m.group(1)), r)
        if m := _MORE.match(clause):
            return self._more(phrase(m.group(1)), r, strong, weak)
        if m := _NEEDS.match(clause):
            return self._add(phrase(m.group(2)), r, strong)
        if m := _WANT_TO_BE.match(clause):
            return self._describe(phrase(m.group(1)), restore_quotes(m.group(2), quotes), r, strong, weak)
        if m := _WANT.match(clause):
            # "I want the background sharp": a thing and how it should be
            thing, what = phrase(m.group(1)), restore_quotes(m.group(2), quotes)
            named = is_thing(thing) or re.fullmatch(SUBJECT, thing)
            if named and (adjective_list(re.sub(r"^(?:more|less)\s+", "", what)) or term_of(what)):
                return self._describe(thing, what, r, strong, weak)
        if m := _ADD.match(clause):
            return self._add(phrase(m.group(1)), r, strong)
        # a bare phrase: a look ("warmer light"), a style term, a thing with new attributes, or a continued list
        return self._bare(clause, quotes, r, strong, weak)
