"""Accuracy of the feedback pipeline on bench/feedback_cases.yaml (development) and bench/feedback_heldout.yaml
(held-out): the rules path always, and the same cases through Ollama when `--host` answers.

Run: `python -m bench.feedback_quality` (rules only) or `python -m bench.feedback_quality --host http://HOST:11434`.
A case passes when every one of its checks holds on the new prompt (has / lacks / neg) and the global checks hold:
no request words leaked into the prompt or the negative prompt (nor, into the negative, a verb the request asked
someone to do: 'wear' of "make the cat wear a crown"), no orphaned articles or prepositions, no duplicate or
contradictory tags, weights in range.
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
from orchestrator.llm.changes import RefineRequest, RefineResult, Source
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.llm.prompt_checks import contradictions, leaked_request_words, negative_leaks, orphans, phrase_in
from orchestrator.llm.tokens import tokenize
from orchestrator.models import Family

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = HERE / "feedback_cases.yaml"
HELDOUT_CASES = HERE / "feedback_heldout.yaml"
PARTS = ("development", "held-out")


@dataclass(frozen=True, slots=True)
class Case:
    """One feedback line and the checks its result must pass."""

    prompt: str
    feedback: str
    has: tuple[str, ...]
    lacks: tuple[str, ...]
    neg: tuple[str, ...]
    part: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """One case's result: the new prompt and the checks it failed (empty = pass)."""

    case: Case
    prompt: str
    negative: str
    failed: tuple[str, ...]
    #: the answer came from the rules although Ollama was asked (Ollama failed or broke an invariant)
    fell_back: bool = False


@dataclass(frozen=True, slots=True)
class PathQuality:
    """Outcomes of one path (rules, or Ollama) over both parts."""

    source: str
    outcomes: tuple[Outcome, ...]

    def accuracy(self, part: str) -> float:
        """Share of the part's cases that pass every check."""
        xs = [o for o in self.outcomes if o.case.part == part]
        return sum(not o.failed for o in xs) / len(xs) if xs else 1.0

    def count(self, part: str) -> int:
        """Cases in the part."""
        return sum(o.case.part == part for o in self.outcomes)

    @property
    def gap(self) -> float:
        """Development minus held-out accuracy: how much of the development score is tuning."""
        return self.accuracy("development") - self.accuracy("held-out")

    def global_failures(self) -> int:
        """Cases failing a global check (leak, orphan, contradiction)."""
        return sum(any(f.startswith("global:") for f in o.failed) for o in self.outcomes)

    @property
    def fallbacks(self) -> int:
        """Cases the rules answered although Ollama was asked."""
        return sum(o.fell_back for o in self.outcomes)


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The quality of each path that was run."""

    paths: tuple[PathQuality, ...]
    case_files: tuple[Path, ...]


def load_cases(path: Path, part: str = "development") -> tuple[Case, ...]:
    """Read one YAML case file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return tuple(
        Case(
            prompt=str(c["prompt"]),
            feedback=str(c["feedback"]),
            has=tuple(str(x) for x in c.get("has") or ()),
            lacks=tuple(str(x) for x in c.get("lacks") or ()),
            neg=tuple(str(x) for x in c.get("neg") or ()),
            part=part,
        )
        for c in doc["cases"]
    )


def load_all(dev: Path = DEFAULT_CASES, heldout: Path = HELDOUT_CASES) -> tuple[Case, ...]:
    """Both parts."""
    return (*load_cases(dev, "development"), *load_cases(heldout, "held-out"))


def check(case: Case, prompt: str, negative: str) -> tuple[str, ...]:
    """The failed checks of one result (empty when it passes)."""
    failed = [f"missing {h!r}" for h in case.has if not phrase_in(prompt, h)]
    failed += [f"still has {x!r}" for x in case.lacks if phrase_in(prompt, x)]
    failed += [f"negative lacks {n!r}" for n in case.neg if not phrase_in(negative, n)]
    failed += [f"global: leaked {w!r}" for w in leaked_request_words(case.prompt, prompt)]
    failed += [f"global: leaked {w!r} into the negative" for w in negative_leaks(case.feedback, "", negative)]
    old_tags = {t.text.lower() for t in tokenize(case.prompt)}
    failed += [f"global: orphaned words in {o!r}" for o in orphans(prompt) if o.lower() not in old_tags]
    failed += [f"global: {c}" for c in contradictions(case.prompt, prompt)]
    return tuple(failed)


def _request(case: Case) -> RefineRequest:
    return RefineRequest(prompt=case.prompt, feedback=case.feedback, family=Family.SDXL)


def _outcome(case: Case, result: RefineResult, asked_ollama: bool) -> Outcome:
    fell_back = asked_ollama and result.source is Source.RULES
    return Outcome(
        case, result.prompt, result.negative_prompt, check(case, result.prompt, result.negative_prompt), fell_back
    )


async def ollama_path(cases: Sequence[Case], host: str) -> PathQuality:
    """The same cases through the full Ollama pipeline at `host`; no outcomes when it does not answer."""
    pipe = FeedbackPipeline(LlmSettings(host=host, timeout_s=120.0))
    health = await pipe.health()
    name = f"ollama {pipe.settings.engineer_model} at {host}"
    if not health.reachable or health.missing_models:
        return PathQuality(f"{name} (not reachable or models missing: not scored)", ())
    return PathQuality(name, tuple([_outcome(c, await pipe.refine(_request(c)), True) for c in cases]))


def run_quality(
    cases_path: Path | str = DEFAULT_CASES, host: str | None = None, heldout_path: Path | str = HELDOUT_CASES
) -> QualityReport:
    """Score the rules (always) and the full Ollama pipeline at `host` (when it answers) on both parts."""
    dev, held = Path(cases_path), Path(heldout_path)
    cases = load_all(dev, held)
    rules = FeedbackPipeline(LlmSettings(enabled=False))
    paths = [PathQuality("rules", tuple(_outcome(c, rules.refine_rules(_request(c)), False) for c in cases))]
    if host:
        paths.append(asyncio.run(ollama_path(cases, host)))
    return QualityReport(paths=tuple(paths), case_files=(dev, held))


def format_markdown(report: QualityReport) -> str:
    """A Markdown section: accuracy per part and path, the gap, and how to run it against Ollama."""
    dev_n = report.paths[0].count("development")
    held_n = report.paths[0].count("held-out")
    lines = [
        "## Feedback interpreter quality",
        "",
        f"{dev_n + held_n} feedback lines: {dev_n} development cases (`{report.case_files[0].name}`, the rules are "
        f"tuned on them) and {held_n} held-out cases (`{report.case_files[1].name}`, written before the rules were "
        "rebuilt and only scored). A case passes when its new prompt has every phrase it must have, none it must "
        "lack, its negative prompt has what it must, and the global checks hold (no request words such as "
        '"should" or "make it" in either prompt, nor in the negative a verb the request asked for, no orphaned '
        "articles or prepositions, no duplicate or contradictory tags, "
        "weights in range).",
        "",
        "| path | development | held-out | gap | cases failing a global check |",
        "|---|---|---|---|---|",
    ]
    for p in report.paths:
        if not p.outcomes:
            lines.append(f"| {p.source} | - | - | - | - |")
            continue
        lines.append(
            f"| {p.source} | {p.accuracy('development'):.1%} | **{p.accuracy('held-out'):.1%}** | "
            f"{p.gap:+.1%} | {p.global_failures()} |"
        )
    for p in report.paths:
        if p.fallbacks:
            lines.append(f"\n{p.source}: {p.fallbacks} case(s) answered by the rules fallback.")
    lines += [
        "",
        "Same cases through a real Ollama (interpreter + engineer, with their invariant checks): "
        "`python -m bench.feedback_quality --host http://HOST:11434`; `-v` lists every failed case and why.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report (and with -v the cases each path got wrong)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default=str(DEFAULT_CASES))
    ap.add_argument("--heldout", default=str(HELDOUT_CASES))
    ap.add_argument("--host", default=None, help="score an Ollama too (e.g. http://127.0.0.1:11434)")
    ap.add_argument("--part", choices=PARTS, default=None, help="with -v: list the failures of one part only")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the failed cases")
    args = ap.parse_args(argv)
    report = run_quality(args.cases, args.host, args.heldout)
    sys.stdout.write(format_markdown(report))
    if args.verbose:
        for p in report.paths:
            bad = [o for o in p.outcomes if o.failed and (args.part is None or o.case.part == args.part)]
            sys.stdout.write(f"\n{p.source}: {len(bad)} failed\n")
            for o in bad:
                sys.stdout.write(
                    f"  - [{o.case.part}] {o.case.prompt!r} + {o.case.feedback!r}\n"
                    f"      -> {o.prompt!r} (neg {o.negative!r}): {'; '.join(o.failed)}\n"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
