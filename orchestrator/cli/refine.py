"""`vibes refine`: one pass of the feedback pipeline from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TextIO

import yaml

from orchestrator.config import Settings, config_dir, load_config, parse_settings
from orchestrator.errors import ConfigError, InputError
from orchestrator.llm.changes import ImageRef4Llm, RefineRequest, RefineResult
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.models import Family


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `vibes refine`."""
    p = sub.add_parser(
        "refine",
        help="turn feedback into a refined prompt (Ollama, or the built-in rules)",
        description="One pass of the feedback pipeline: PROMPT + feedback (+ picked images) -> a refined prompt.",
    )
    p.add_argument("prompt", metavar="PROMPT", help="the current prompt")
    p.add_argument("--feedback", required=True, metavar="TEXT", help='what to change, e.g. "warmer light, no people"')
    p.add_argument("--family", default=Family.SD15.value, choices=[f.value for f in Family], help="model family")
    p.add_argument("--negative", default="", metavar="TEXT", help="the current negative prompt")
    p.add_argument("--selected", action="append", default=[], metavar="IMG", help="an image you liked (repeatable)")
    p.add_argument("--rejected", action="append", default=[], metavar="IMG", help="an image you did not (repeatable)")
    p.add_argument("--config", metavar="DIR", help="config directory (default: $VIBES_CONFIG or ./config)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def load_settings(directory: str | None) -> Settings:
    """The settings of the config dir; refine needs no nodes, so a missing gpus.yaml is fine."""
    try:
        return load_config(directory).settings
    except ConfigError as e:
        d = config_dir(directory)
        if (d / "gpus.yaml").exists():
            raise
        settings_path = d / "settings.yaml"
        if not settings_path.exists():
            return Settings()
        try:
            doc = yaml.safe_load(settings_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(str(settings_path), "", f"cannot read: {err}") from e
        return parse_settings(doc or {}, str(settings_path))


def build_request(args: argparse.Namespace) -> RefineRequest:
    """CLI arguments -> a RefineRequest; images are numbered selected first, then rejected."""
    refs: list[ImageRef4Llm] = []
    for raw in [*args.selected, *args.rejected]:
        path = Path(raw)
        if not path.is_file():
            raise InputError(f"image not found: {raw}")
        refs.append(ImageRef4Llm(number=len(refs) + 1, path=path, prompt=args.prompt, seed=0))
    n_sel = len(args.selected)
    return RefineRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        feedback=args.feedback,
        family=Family(args.family),
        selected=tuple(refs[:n_sel]),
        rejected=tuple(refs[n_sel:]),
        stage_images=tuple(refs),
    )


def print_result(result: RefineResult, *, as_json: bool, out: TextIO) -> None:
    """The --json object, or a short human summary."""
    if as_json:
        out.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    source = result.source.value
    if result.fallback_reason:
        source += f" (fallback: {result.fallback_reason})"
    lines = [
        f"diff:      {result.diff.render()}",
        f"prompt:    {result.prompt}",
        f"negative:  {result.negative_prompt or '(none)'}",
        f"rationale: {result.rationale}",
        f"source:    {source}",
    ]
    if result.seed is not None:
        lines.append(f"seed:      {result.seed}")
    out.write("\n".join(lines) + "\n")


async def refine(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run one refinement and print it."""
    settings = load_settings(args.config)
    req = build_request(args)
    result = await FeedbackPipeline(settings.llm).refine(req)
    print_result(result, as_json=args.json, out=out)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of `vibes refine`."""
    return asyncio.run(refine(args))
