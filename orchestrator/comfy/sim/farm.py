"""The simulated farm: one simulator per sim node of a Config, on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from types import TracebackType

from orchestrator.comfy.sim.server import ComfySimulator
from orchestrator.config import Config
from orchestrator.errors import ConfigError

#: LoRAs every simulated node holds unless its sim block names its own
DEFAULT_LORAS: tuple[str, ...] = (
    "detail_tweaker.safetensors",
    "film_grain.safetensors",
    "watercolor_style.safetensors",
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SimFarm:
    """Serves every sim node of a Config; start() returns the config pointing at the bound ports."""

    def __init__(self, config: Config, *, time_scale: float | None = None, ephemeral_ports: bool = True) -> None:
        self.config = config
        self.time_scale = config.settings.sim.time_scale if time_scale is None else time_scale
        self.ephemeral_ports = ephemeral_ports
        self.simulators: dict[str, ComfySimulator] = {}

    async def start(self) -> Config:
        """Start one simulator per sim node (all or none)."""
        settings = self.config.settings
        checkpoints = sorted(set(settings.checkpoints.values()))
        nodes = []
        try:
            for i, node in enumerate(self.config.nodes):
                if node.sim is None:
                    nodes.append(node)
                    continue
                if not self.ephemeral_ports and not is_loopback(node.host):
                    raise ConfigError(
                        str(self.config.directory / "gpus.yaml"),
                        f"nodes[{i}].host",
                        f"{node.host!r} is not a loopback address; the simulator serves only this machine",
                    )
                sim = ComfySimulator(
                    node,
                    time_scale=self.time_scale,
                    host="127.0.0.1" if self.ephemeral_ports else node.host,
                    port=0 if self.ephemeral_ports else node.port,
                    default_checkpoints=checkpoints,
                    default_loras=DEFAULT_LORAS,
                    default_upscale_models=(settings.upscale_model,),
                )
                await sim.start()
                self.simulators[node.id] = sim
                nodes.append(replace(node, host=sim.host, port=sim.port))
        except BaseException:
            await self.stop()
            raise
        return self.config.with_nodes(tuple(nodes))

    async def stop(self) -> None:
        """Stop every simulator."""
        sims, self.simulators = list(self.simulators.values()), {}
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)

    async def __aenter__(self) -> Config:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
