"""Config loading: the shipped files parse, and every error names the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config, parse_nodes, parse_settings
from orchestrator.errors import ConfigError
from orchestrator.models import Family, TaskKind, Tier

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_gpus_yaml_is_the_seed_farm_on_loopback():
    cfg = load_config(ROOT / "config", env={})
    assert [n.id for n in cfg.nodes] == ["gpu-premium", "gpu-quality", "gpu-standard", "gpu-draft"]
    assert [n.tier for n in cfg.nodes] == [Tier.PREMIUM, Tier.QUALITY, Tier.STANDARD, Tier.DRAFT]
    assert all(n.host == "127.0.0.1" and n.sim is not None for n in cfg.nodes)
    assert cfg.nodes[0].sim.seconds_per_step[Family.SDXL] == pytest.approx(0.30)
    assert cfg.nodes[3].capabilities == ("sd15",)


def test_example_farm_parses_without_being_contacted():
    doc = yaml.safe_load((ROOT / "config" / "gpus.example.yaml").read_text())
    nodes = parse_nodes(doc, "config/gpus.example.yaml")
    assert len(nodes) == 4 and all(n.sim is None for n in nodes)


def test_settings_example_equals_defaults():
    doc = yaml.safe_load((ROOT / "config" / "settings.example.yaml").read_text())
    s = parse_settings(doc, env={})
    d = parse_settings({}, env={})
    assert s.funnel.stages == d.funnel.stages
    assert [st.count for st in s.funnel.stages] == [20, 8, 3, 1]
    assert s.funnel.stages[1].task is TaskKind.STANDARD
    assert s.checkpoint_for(Family.FLUX) == "flux1-dev-fp8.safetensors"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"nodes": [{"id": "a", "tier": "gold", "host": "h", "capabilities": []}]},
            "config/gpus.yaml: nodes[0].tier: expected one of premium, quality, standard, draft",
        ),
        ({"nodes": [{"id": "a", "tier": "draft", "capabilities": []}]}, "config/gpus.yaml: nodes[0].host: required"),
        (
            {"nodes": [{"id": "a", "tier": "draft", "host": "h", "capabilities": [], "port": "x"}]},
            "config/gpus.yaml: nodes[0].port: expected an integer",
        ),
        ({"nodes": []}, "config/gpus.yaml: nodes: expected at least one node"),
        (
            {
                "nodes": [
                    {"id": "a", "tier": "draft", "host": "h", "capabilities": ["sd15"]},
                    {"id": "a", "tier": "draft", "host": "h", "capabilities": ["sd15"]},
                ]
            },
            "config/gpus.yaml: nodes[1].id: duplicate node id 'a'",
        ),
        (
            {
                "nodes": [
                    {
                        "id": "a",
                        "tier": "draft",
                        "host": "h",
                        "capabilities": ["sd15"],
                        "sim": {"seconds_per_step": {"sd99": 1}},
                    }
                ]
            },
            "config/gpus.yaml: nodes[0].sim.seconds_per_step.sd99: expected one of sd15",
        ),
        ([1, 2], "config/gpus.yaml: expected a mapping"),
    ],
)
def test_gpus_errors_name_file_and_key(doc, message):
    with pytest.raises(ConfigError) as e:
        parse_nodes(doc, "config/gpus.yaml")
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"health": {"interval_s": "often"}}, "settings.yaml: health.interval_s: expected a number"),
        (
            {"funnel": {"stages": [{"name": "x", "count": 0}]}},
            "settings.yaml: funnel.stages[0].count: expected a positive",
        ),
        ({"discord": {"thread_auto_archive_minutes": 5}}, "settings.yaml: discord.thread_auto_archive_minutes"),
        ({"colour": "blue"}, "settings.yaml: colour: unknown key"),
        ({"sim": {"time_scale": 0}}, "settings.yaml: sim.time_scale: expected a number > 0"),
    ],
)
def test_settings_errors_name_file_and_key(doc, message):
    with pytest.raises(ConfigError) as e:
        parse_settings(doc, "settings.yaml", env={})
    assert str(e.value).startswith(message)


def test_vibes_data_env_overrides_data_dir(tmp_path):
    s = parse_settings({"storage": {"data_dir": "elsewhere"}}, env={"VIBES_DATA": str(tmp_path)})
    assert s.storage.data_dir == tmp_path
    assert s.storage.db_path == tmp_path / "vibes.db"


def test_missing_gpus_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"gpus\.yaml: not found"):
        load_config(tmp_path, env={})


def test_bad_yaml_names_the_line(tmp_path):
    (tmp_path / "gpus.yaml").write_text("nodes: [\n  - id: a\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path, env={})
