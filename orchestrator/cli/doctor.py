"""`vibes doctor`: validate the config, reach every node and Ollama, compare the models they hold with the config."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import time

from orchestrator.cli.common import add_config_arg, load
from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.sim import SimFarm
from orchestrator.config import Config, NodeConfig
from orchestrator.db import SCHEMA_VERSION, check_database, is_postgres_url, peek_ref
from orchestrator.db.url import scrub
from orchestrator.errors import ComfyError
from orchestrator.llm.pipeline import FeedbackPipeline
from orchestrator.models import Family
from orchestrator.service import HEALTH_REF, HEALTH_SNAPSHOT_S, FarmHealth


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check config, nodes, models and Ollama", description=__doc__)
    add_config_arg(p)
    p.add_argument("--sim", action="store_true", help="serve the config's simulated nodes in this process first")
    p.set_defaults(run=run)


def wanted_models(node: NodeConfig, config: Config) -> tuple[list[str], list[str]]:
    """The checkpoints and upscale models the settings ask this node for."""
    s = config.settings
    ckpts = sorted({s.checkpoint_for(f) for f in Family if node.can_run(f.value)})
    ups = [s.upscale_model] if node.can_run("upscale") else []
    return ckpts, ups


def is_public_address(host: str) -> bool:
    """True for an IP address routed on the internet (names are not resolved: doctor reaches nothing but the nodes)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return False


def public_address_warning(node: NodeConfig) -> str | None:
    """ComfyUI has no authentication: a node on a public address is a GPU anyone can use (and read the images of)."""
    if not is_public_address(node.host):
        return None
    return (
        f"WARNING: {node.host} is a public internet address. ComfyUI has no authentication: never expose its port "
        "to the internet; join the node to a private network (WireGuard, Tailscale) and list that address instead"
    )


async def check_node(node: NodeConfig, config: Config, *, sim_served: bool = False) -> list[str]:
    """Problems with one node (empty when fine)."""
    problems: list[str] = []
    client = ComfyClient(node.base_url, http_timeout=config.settings.health.timeout_s, name=node.id)
    try:
        stats = await client.system_stats()
        models = await client.models()
    except ComfyError as e:
        if node.sim is not None and not sim_served:
            return [
                f"not reachable at {node.base_url}: it is a simulated node (it has a sim: block); run "
                "`vibes doctor --sim`, or start `vibes sim` in another terminal first"
            ]
        return [f"not reachable at {node.base_url} ({e})"]
    finally:
        await client.close()
    version = stats.comfyui_version or "unknown version"
    print(f"  {node.id}: ComfyUI {version}, {len(models.checkpoints)} checkpoints, {len(models.loras)} LoRAs")
    ckpts, ups = wanted_models(node, config)
    problems += [f"missing checkpoint {c}" for c in ckpts if c not in models.checkpoints]
    problems += [f"missing upscale model {u}" for u in ups if u not in models.upscale_models]
    return problems


async def _doctor(args: argparse.Namespace) -> int:
    config = load(args)
    print(f"config: {config.directory} ({len(config.nodes)} nodes) OK")
    farm = None
    if args.sim:
        farm = SimFarm(config, ephemeral_ports=True)
        config = await farm.start()
    bad = 0
    try:
        print("nodes:")
        for node in config.nodes:
            warning = public_address_warning(node)
            if warning:
                print(f"  {node.id}: {warning}")
            problems = await check_node(node, config, sim_served=farm is not None)
            for p in problems:
                print(f"  {node.id}: PROBLEM: {p}")
            bad += bool(problems)
    finally:
        if farm is not None:
            await farm.stop()
    print("ollama:")
    health = await FeedbackPipeline(config.settings.llm).health()
    if not config.settings.llm.enabled:
        print("  disabled in settings (feedback uses the rule-based path)")
    elif not health.reachable:
        print(f"  not reachable ({health.error}); feedback will use the rule-based path")
    else:
        print(f"  Ollama {health.version} answers")
        for m in health.missing_models:
            print(f"  PROBLEM: model {m} is not installed (ollama pull {m})")
        bad += bool(health.missing_models)
    bad += await _database_health(config)
    bad += await _instances_health(config)
    bad += await _engine_health(config)
    print("all good" if not bad else f"{bad} problem(s) found")
    return 0 if not bad else 1


async def _database_health(config: Config) -> int:
    """Which backend, whether it answers, whether it is migrated; 1 when it cannot be used. Never the password."""
    print("database:")
    check = await check_database(config.settings.storage.database_target)
    if check.problem:
        print(f"  PROBLEM: {check.problem}")
        return 1
    if check.version is None:
        print(f"  {check.backend}: {check.detail}")
    elif check.migrated:
        print(f"  {check.backend} at {check.where} ({check.detail}): schema v{check.version}, migrated")
    else:
        print(
            f"  {check.backend} at {check.where} ({check.detail}): schema v{check.version}, migrated to "
            f"v{SCHEMA_VERSION} at the next start"
        )
    return 0


async def _instances_health(config: Config) -> int:
    """With PostgreSQL: who holds the lock, the standbys, and whether this host sees the active one's image store."""
    print("instances:")
    url = config.settings.storage.database
    if not is_postgres_url(url):
        print("  SQLite: one instance, no leadership lock (a PostgreSQL database allows an active + standbys)")
        return 0
    # Imported here: asyncpg is the `postgres` extra, and SQLite installs never need it.
    from orchestrator.leadership import CONNECTION_ERRORS, read_instances
    from orchestrator.shared_store import marker_path, read_marker

    try:
        found, holder = await read_instances(url, timeout=config.settings.health.timeout_s)
    except CONNECTION_ERRORS as e:
        print(f"  PROBLEM: cannot read the instances ({type(e).__name__}: {scrub(str(e), url)})")
        return 1
    active = next((i for i in found if i.holds_lock), None)
    for i in found:
        what = "ACTIVE (holds the lock)" if i.holds_lock else i.role.value
        age = (dt.datetime.now(dt.UTC) - i.last_seen).total_seconds()
        started = f"{i.started:%Y-%m-%d %H:%M:%S %Z}"
        print(f"  {i.id}: {what} on {i.host}, pid {i.pid}, started {started}, seen {age:.0f} s ago")
    if active is None:
        if holder is not None:
            print(f"  PROBLEM: the lock is held by server process {holder}, which is not a vibes instance")
            return 1
        print("  no instance holds the lock: no bot is active" + (" (the standbys will take it)" if found else ""))
        return 0
    if active.store_nonce is None:
        print("  shared image store: the active instance has not written its marker yet")
        return 0
    images = config.settings.storage.images_dir
    seen = await read_marker(images)
    if seen is None or seen.nonce != active.store_nonce:
        print(
            f"  PROBLEM: {marker_path(images)} is not the active instance's marker: this host does not see its "
            "image store (mount the same shared volume at storage.data_dir on every instance)"
        )
        return 1
    print(f"  shared image store: {images} is the one the active instance writes to")
    return 0


async def _engine_health(config: Config) -> int:
    """What the running bot (or the last one) recorded about itself; 1 when a supervised task is dead."""
    print("engine:")
    raw = await peek_ref(config.settings.storage.database_target, *HEALTH_REF)
    if raw is None:
        print("  no engine (bot, demo or generate) has recorded its health in this data directory yet")
        return 0
    try:
        h = FarmHealth.from_json(raw)
    except (ValueError, TypeError):
        print("  the recorded health snapshot is unreadable")
        return 0
    age = max(0.0, time.time() - h.taken_at)
    print(f"  snapshot {age:.0f} s old (written every {HEALTH_SNAPSHOT_S:.0f} s while an engine runs, and as it stops)")
    restarts = ", ".join(f"{k} {v}" for k, v in sorted(h.restarts_by_task.items()))
    print(f"  supervised task restarts: {h.task_restarts}" + (f" ({restarts})" if restarts else ""))
    heals = ", ".join(f"{k} {v}" for k, v in sorted(h.heals_by_kind.items()))
    print(f"  reconciler heals: {h.reconciler_heals}" + (f" ({heals}; each is a bug: see the log)" if heals else ""))
    print(f"  backup copies of stragglers: {h.backups_started} ({h.backups_won} delivered first)")
    print(f"  DB writes retried: {h.db_retries}")
    if h.dead_tasks:
        print(f"  PROBLEM: supervised tasks dead: {', '.join(h.dead_tasks)}")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_doctor(args))
