"""
A ComfyUI-protocol server on loopback that renders stand-in PNGs at a node's configured speeds.

It is the demo farm, the test peer and the benchmark farm. It answers the same routes (also under /api), validates
graphs with ComfyUI's error shapes, runs one prompt at a time in FIFO order, sends the same WebSocket messages in
the same order, caches an identical graph, and injects the faults of a node's `sim.faults` block.

By job: validation.py (graphs, as ComfyUI checks them), engine.py (the queue and execution), values.py (what flows
between nodes), faults.py (the fault model), server.py (HTTP and WebSocket routes, a node's life cycle), farm.py
(one simulator per sim node of a config), render.py (the stand-in images).
"""

from orchestrator.comfy.sim.engine import SimPromptRecord, SimStats
from orchestrator.comfy.sim.farm import DEFAULT_LORAS, SimFarm, is_loopback
from orchestrator.comfy.sim.faults import Garbage, SimFaultState, garbage_frame
from orchestrator.comfy.sim.server import COMFYUI_VERSION, ComfySimulator

__all__ = [
    "COMFYUI_VERSION",
    "DEFAULT_LORAS",
    "ComfySimulator",
    "Garbage",
    "SimFarm",
    "SimFaultState",
    "SimPromptRecord",
    "SimStats",
    "garbage_frame",
    "is_loopback",
]
