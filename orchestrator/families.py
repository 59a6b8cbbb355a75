"""
Rules about model families that the session engine, the facade and the simulator share, each written once.

- `guess_family`: which family a checkpoint is, from the configured checkpoints or a telling fragment of its name;
- `sampling_defaults`: the cfg and scheduler a family samples with when nothing else is said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.models import Family

#: name fragments that give a checkpoint's family away, most specific first
_FAMILY_HINTS: tuple[tuple[str, Family], ...] = (
    ("flux", Family.FLUX),
    ("pony", Family.PONY),
    ("illustrious", Family.ILLUSTRIOUS),
    ("noob", Family.ILLUSTRIOUS),
    ("sdxl", Family.SDXL),
    ("_xl", Family.SDXL),
    ("-xl", Family.SDXL),
    ("xl_", Family.SDXL),
    ("xl-", Family.SDXL),
    ("v1-5", Family.SD15),
    ("sd15", Family.SD15),
    ("sd_1.5", Family.SD15),
    ("sd1.5", Family.SD15),
)


def guess_family(checkpoint: str, configured: Mapping[Family, str] | None = None) -> Family | None:
    """The family of a checkpoint: the configured one it is, else a telling fragment of its name; None if unsure."""
    for family in Family:
        if configured is not None and configured.get(family) == checkpoint:
            return family
    name = checkpoint.lower()
    return next((family for hint, family in _FAMILY_HINTS if hint in name), None)


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """The cfg and scheduler a family samples with unless told otherwise."""

    cfg: float
    scheduler: str
    #: True for a guidance-distilled family (FLUX): it samples this way whatever a recipe says
    fixed: bool = False


_DEFAULT = SamplingDefaults(cfg=7.0, scheduler="normal")
_FLUX = SamplingDefaults(cfg=1.0, scheduler="simple", fixed=True)


def sampling_defaults(family: Family) -> SamplingDefaults:
    """How `family` samples by default (FLUX: cfg 1.0 and the simple scheduler, always)."""
    return _FLUX if family is Family.FLUX else _DEFAULT
