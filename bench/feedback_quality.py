"""Precision and recall of the feedback interpreter on bench/feedback_cases.yaml (rules, and Ollama when asked).

Run: `python -m bench.feedback_quality` (rules only) or `python -m bench.feedback_quality --host http://HOST:11434`
to score the configured Ollama interpreter model on the same set.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.config import LlmSettings
from orchestrator.errors import LlmError
from orchestrator.llm.changes import Changes
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.llm.prompt_text import matches, stems, tokenize
from orchestrator.llm.rules import RuleInterpreter
from orchestrator.llm.stages import FeedbackInterpreter, StageCall
from orchestrator.llm.vocab import LOOKS

FIELDS = ("keep", "remove", "add")
DEFAULT_CASES = Path(__file__).resolve().parent / "feedback_cases.yaml"


@dataclass(frozen=True, slots=True)
class Case:
    """One feedback example with the expected keep/remove/add."""

    prompt: str
    feedback: str
    keep: tuple[str, ...]
    remove: tuple[str, ...]
    add: tuple[str, ...]

    def expected(self, field: str) -> tuple[str, ...]:
        return tuple(getattr(self, field))


@dataclass(frozen=True, slots=True)
class FieldScore:
    """Counts for one field: predicted items that match, all predicted, expected items found, all expected."""

    field: str
    pred_hits: int
    pred_total: int
    exp_hits: int
    exp_total: int

    @property
    def precision(self) -> float:
        return self.pred_hits / self.pred_total if self.pred_total else 1.0

    @property
    def recall(self) -> float:
        return self.exp_hits / self.exp_total if self.exp_total else 1.0


@dataclass(frozen=True, slots=True)
class PathQuality:
    """Scores of one interpreter (rules or an Ollama model) over the whole set."""

    source: str
    fields: tuple[FieldScore, ...]
    cases: int
    #: cases where the interpreter gave no answer (Ollama failures); they count as empty predictions
    failures: int
    #: feedback texts where some expected item was missed or something unexpected was predicted
    misses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The quality of each interpreter path that was run."""

    paths: tuple[PathQuality, ...]
    cases_path: Path


def load_cases(path: Path) -> tuple[Case, ...]:
    """Read the YAML set."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for c in doc["cases"]:
        out.append(
            Case(
                prompt=str(c["prompt"]),
                feedback=str(c["feedback"]),
                keep=tuple(str(x) for x in c.get("keep") or ()),
                remove=tuple(str(x) for x in c.get("remove") or ()),
                add=tuple(str(x) for x in c.get("add") or ()),
            )
        )
    return tuple(out)


def predicted(changes: Changes, prompt: str) -> dict[str, tuple[str, ...]]:
    """Changes -> keep/remove/add as scored: modify counts as remove old + add new; "more X" of a new X as add."""
    present = [t.text for t in tokenize(prompt)]
    new_emphasis = tuple(e for e in changes.emphasis_up if not any(matches(p, e) for p in present))
    return {
        "keep": changes.keep,
        "remove": (*changes.remove, *changes.modify.keys()),
        "add": (*changes.add, *changes.modify.values(), *new_emphasis),
    }


def same_thing(a: str, b: str) -> bool:
    """Two phrases name the same thing when one's content words are all in the other (by stem)."""
    if not stems(a) or not stems(b):
        return False
    return matches(a, b) or matches(b, a)


def _same_look(item: str, matched: Sequence[str]) -> bool:
    return any(item in look.add and any(m in look.add for m in matched) for look in LOOKS.values())


def _score(cases: Sequence[Case], preds: Sequence[dict[str, tuple[str, ...]] | None], source: str) -> PathQuality:
    counts = {f: [0, 0, 0, 0] for f in FIELDS}
    misses: list[str] = []
    for case, pred in zip(cases, preds, strict=True):
        wrong = False
        for f in FIELDS:
            p = tuple(dict.fromkeys((pred or {}).get(f, ())))
            e = case.expected(f)
            hit = [any(same_thing(x, y) for y in e) for x in p]
            # the rules expand one adjective into a few tags ("warmer" -> warm golden light, warm color palette):
            # an unmatched tag of the same look as a matched one names the same concept
            hit = [
                h or _same_look(x, [q for q, qh in zip(p, hit, strict=True) if qh]) for x, h in zip(p, hit, strict=True)
            ]
            ph = sum(hit)
            eh = sum(any(same_thing(y, x) for x in p) for y in e)
            c = counts[f]
            c[0] += ph
            c[1] += len(p)
            c[2] += eh
            c[3] += len(e)
            wrong = wrong or ph < len(p) or eh < len(e)
        if wrong:
            misses.append(case.feedback)
    return PathQuality(
        source=source,
        fields=tuple(FieldScore(f, *counts[f]) for f in FIELDS),
        cases=len(cases),
        failures=sum(p is None for p in preds),
        misses=tuple(misses),
    )


async def _ollama_predictions(cases: Sequence[Case], host: str) -> list[dict[str, tuple[str, ...]] | None]:
    settings = LlmSettings(host=host, timeout_s=120.0)
    pipe = FeedbackPipeline(settings)
    out: list[dict[str, tuple[str, ...]] | None] = []
    async with pipe._ollama() as client:
        interpreter = FeedbackInterpreter(StageCall(client, pipe.host, settings.timeout_s), settings.interpreter_model)
        for case in cases:
            try:
                ch = await interpreter.interpret(
                    feedback=case.feedback,
                    prompt=case.prompt,
                    negative="",
                    selected=(),
                    rejected=(),
                    stage_images=(),
                    intent=(),
                )
                out.append(predicted(ch, case.prompt))
            except LlmError:
                out.append(None)
    return out


def run_quality(cases_path: Path | str = DEFAULT_CASES, host: str | None = None) -> QualityReport:
    """Score the rules (always) and the Ollama interpreter at `host` (when given) on the case set."""
    path = Path(cases_path)
    cases = load_cases(path)
    rules = RuleInterpreter()
    rule_preds = [predicted(rules.interpret(c.feedback, c.prompt, range(1, 21)), c.prompt) for c in cases]
    paths = [_score(cases, rule_preds, "rules")]
    if host:
        llm_preds = asyncio.run(_ollama_predictions(cases, host))
        paths.append(_score(cases, llm_preds, f"ollama {LlmSettings().interpreter_model} at {host}"))
    return QualityReport(paths=tuple(paths), cases_path=path)


def format_markdown(report: QualityReport) -> str:
    """A Markdown section: precision/recall per field and path, and how to run it against Ollama."""
    lines = [
        "## Feedback interpreter quality",
        "",
        f"{report.paths[0].cases} feedback cases from `{report.cases_path.name}`; an item counts when it names the "
        "same thing as an expected one (content words by stem); the several tags one adjective expands to count as one "
        "concept. modify counts as remove + add.",
        "",
        "| path | field | precision | recall |",
        "|---|---|---|---|",
    ]
    for p in report.paths:
        for f in p.fields:
            lines.append(f"| {p.source} | {f.field} | {f.precision:.2f} | {f.recall:.2f} |")
    for p in report.paths:
        if p.failures:
            lines.append(f"\n{p.source}: {p.failures} case(s) without an answer (counted as empty).")
    lines += [
        "",
        "Same set against a real Ollama: `python -m bench.feedback_quality --host http://HOST:11434`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report (and with -v the cases each path got wrong)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default=str(DEFAULT_CASES))
    ap.add_argument("--host", default=None, help="score an Ollama too (e.g. http://127.0.0.1:11434)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the cases with a miss")
    args = ap.parse_args(argv)
    report = run_quality(args.cases, args.host)
    sys.stdout.write(format_markdown(report))
    if args.verbose:
        for p in report.paths:
            sys.stdout.write(f"\n{p.source} misses:\n" + "".join(f"  - {m}\n" for m in p.misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
