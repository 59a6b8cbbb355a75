"""
The configuration: gpus.yaml (the farm's nodes) and settings.yaml, loaded once into frozen dataclasses.

Every public name is importable from here, so callers never name the module that holds it. Parsing and validation
live in this package only; every error names the file and the key.
"""

from orchestrator.config.loading import Config, config_dir, load_config
from orchestrator.config.nodes import BAD_SYSTEM_STATS, NodeConfig, SimFaults, SimNodeConfig, parse_nodes
from orchestrator.config.settings import (
    DEFAULT_CHECKPOINTS,
    DEFAULT_STAGES,
    DEFAULT_UPSCALE_MODEL,
    DiscordSettings,
    FunnelSettings,
    HealthSettings,
    LeadershipSettings,
    LimitSettings,
    LlmSettings,
    SchedulerSettings,
    Settings,
    SimSettings,
    SpeculationSettings,
    StageRecipe,
    StorageSettings,
    TransferSettings,
    parse_settings,
)

__all__ = [
    "BAD_SYSTEM_STATS",
    "DEFAULT_CHECKPOINTS",
    "DEFAULT_STAGES",
    "DEFAULT_UPSCALE_MODEL",
    "Config",
    "DiscordSettings",
    "FunnelSettings",
    "HealthSettings",
    "LeadershipSettings",
    "LimitSettings",
    "LlmSettings",
    "NodeConfig",
    "SchedulerSettings",
    "Settings",
    "SimFaults",
    "SimNodeConfig",
    "SimSettings",
    "SpeculationSettings",
    "StageRecipe",
    "StorageSettings",
    "TransferSettings",
    "config_dir",
    "load_config",
    "parse_nodes",
    "parse_settings",
]
