"""`python -m bot [--sim] [--config DIR]`: the same as `vibes bot`."""

from __future__ import annotations

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["bot", *sys.argv[1:]]))
