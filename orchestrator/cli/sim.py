"""`vibes sim`: serve the simulated ComfyUI nodes of the config on their configured loopback ports until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import replace

from orchestrator.cli.common import add_config_arg, load
from orchestrator.comfy.sim import SimFarm, is_loopback


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim",
        help="serve the simulated GPU nodes named in the config",
        description="Serve every node of gpus.yaml that has a sim: block, on its host and port, until Ctrl-C.",
    )
    add_config_arg(p)
    p.add_argument(
        "--time-scale",
        type=float,
        metavar="X",
        help="multiply every simulated duration by X (default: settings.yaml sim.time_scale)",
    )
    p.set_defaults(run=run)


async def serve(args: argparse.Namespace) -> int:
    config = load(args)
    served = []
    for i, node in enumerate(config.nodes):
        if node.sim is None:
            continue
        if not is_loopback(node.host):
            print(
                f"vibes sim: refusing node {node.id} (gpus.yaml nodes[{i}].host = {node.host!r}): "
                "the simulator only serves loopback addresses such as 127.0.0.1",
                file=sys.stderr,
            )
            continue
        served.append(node)
    if not served:
        print("vibes sim: no node with a sim: block on a loopback host in the config", file=sys.stderr)
        return 2
    time_scale = args.time_scale if args.time_scale is not None else config.settings.sim.time_scale
    if time_scale <= 0:
        print("vibes sim: --time-scale must be positive", file=sys.stderr)
        return 2
    farm = SimFarm(replace(config, nodes=tuple(served)), time_scale=time_scale, ephemeral_ports=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        try:
            bound = await farm.start()
        except OSError as e:
            print(f"vibes sim: cannot listen: {e}", file=sys.stderr)
            return 2
        for node in bound.nodes:
            print(
                f"{node.id}: simulated ComfyUI at {node.base_url} ({node.name}, time scale {time_scale:g})", flush=True
            )
        await stop.wait()
        print("vibes sim: stopping", file=sys.stderr)
    finally:
        await farm.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))
