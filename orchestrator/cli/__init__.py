"""The `vibes` command: one subcommand per module in this package, each with add_parser() and run()."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: subcommand -> module in orchestrator.cli (bot lives in bot/ because it needs discord)
SUBCOMMANDS: dict[str, str] = {
    "bot": "orchestrator.cli.bot_cmd",
    "demo": "orchestrator.cli.demo",
    "generate": "orchestrator.cli.generate",
    "refine": "orchestrator.cli.refine",
    "sim": "orchestrator.cli.sim",
    "doctor": "orchestrator.cli.doctor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibes", description="Vibes ImGen: a ComfyUI GPU farm in Discord.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for _name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vibes` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from orchestrator.errors import ImGenError

    try:
        return int(args.run(args) or 0)
    except ImGenError as e:
        print(f"vibes: {e.user_message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
