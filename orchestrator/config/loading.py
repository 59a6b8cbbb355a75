"""
Where the configuration comes from: the config directory, its two YAML files, and the Config holding both.

The directory is --config DIR, else $VIBES_CONFIG, else ./config; gpus.yaml is required there, settings.yaml is not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.nodes import NodeConfig, parse_nodes
from orchestrator.config.settings import Settings, parse_settings
from orchestrator.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: the farm and the settings."""

    nodes: tuple[NodeConfig, ...]
    settings: Settings = field(default_factory=Settings)
    directory: Path = Path("config")

    def node(self, node_id: str) -> NodeConfig:
        """The node with this id (KeyError when the farm has none)."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def with_nodes(self, nodes: tuple[NodeConfig, ...]) -> Config:
        """A copy with other nodes (tests and `--sim` rebind ports)."""
        return replace(self, nodes=nodes)

    def with_settings(self, **changes: Any) -> Config:
        """A copy with some settings sections replaced."""
        return replace(self, settings=replace(self.settings, **changes))


def _load_yaml(path: Path, shown: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(shown, "", f"cannot read: {e.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(shown, where, f"invalid YAML: {getattr(e, 'problem', e)}") from None


def config_dir(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """--config DIR, else $VIBES_CONFIG, else ./config."""
    env = os.environ if env is None else env
    return Path(explicit or env.get("VIBES_CONFIG") or "config")


def load_config(directory: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load gpus.yaml (required) and settings.yaml (optional) from the config directory."""
    d = config_dir(directory, env)
    gpus = d / "gpus.yaml"
    shown = str(gpus)
    if not gpus.exists():
        raise ConfigError(shown, "", "not found (copy config/gpus.example.yaml or pass --config DIR)")
    nodes = parse_nodes(_load_yaml(gpus, shown), shown)
    settings_path = d / "settings.yaml"
    settings = (
        parse_settings(_load_yaml(settings_path, str(settings_path)), str(settings_path), env)
        if settings_path.exists()
        else parse_settings({}, str(settings_path), env)
    )
    return Config(nodes=nodes, settings=settings, directory=d)
