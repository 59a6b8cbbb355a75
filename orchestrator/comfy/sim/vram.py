"""
Which checkpoints a simulated card holds in VRAM: ComfyUI's smart memory, reduced to whole checkpoints.

ComfyUI keeps a model on the GPU after a prompt and frees VRAM only when the next model needs it:
`model_management.free_memory` unloads models until `memory_required - get_free_memory(device)` is met (with
smart memory on, the default), and `load_models_gpu` asks for a model's size x 1.1 plus the inference reserve
(`minimum_inference_memory`: 0.8 GB plus `EXTRA_RESERVED_VRAM`, 0.4 GB on Linux). A model whose loader output the
execution cache still references but that was pushed out is offloaded to CPU RAM; using it again moves its weights
back (`model_memory_required` of a loaded model is only its offloaded part). So a card with room for two
checkpoints switches between them for nothing, and a smaller one moves weights each time.

The sim keeps whole checkpoints (ComfyUI can offload part of one) and frees the one used longest ago (ComfyUI ranks
by offloaded size and references first); the sizes below are the fp16 weights ComfyUI puts on the card (UNet, text
encoders and VAE; FLUX as its fp8 single-file checkpoint).
"""

from __future__ import annotations

from collections.abc import Collection

from orchestrator.families import guess_family
from orchestrator.models import Family

#: GB of VRAM a family's checkpoint takes once loaded
MODEL_GB: dict[Family, float] = {Family.SD15: 2.1, Family.SDXL: 6.9, Family.FLUX: 17.2}
#: asked for on top of a model's size x LOAD_FACTOR: ComfyUI's minimum inference memory and reserve (Linux)
RESERVE_GB = 1.2
#: what the CUDA context and the allocator keep of the card's memory, never free for models
CONTEXT_GB = 0.5
LOAD_FACTOR = 1.1


def model_gb(checkpoint: str) -> float:
    """VRAM a checkpoint takes, from its family (one the sim cannot place counts as SD 1.5, as its speed does)."""
    family = (guess_family(checkpoint) or Family.SD15).speed_family
    return MODEL_GB.get(family, MODEL_GB[Family.SD15])


class Vram:
    """The checkpoints a card's VRAM holds, least recently used first; 0 GB (not configured) holds only the last."""

    def __init__(self, total_gb: float) -> None:
        self.total_gb = total_gb
        self._held: dict[str, float] = {}

    def holds(self, checkpoint: str) -> bool:
        """True if the checkpoint's weights are on the card: using it moves nothing."""
        return checkpoint in self._held

    def use(self, checkpoint: str) -> None:
        """The checkpoint is put on the card (loaded, or moved back); the least recently used others make room."""
        size = self._held.pop(checkpoint, None) or model_gb(checkpoint)
        room = self.total_gb - CONTEXT_GB - size * LOAD_FACTOR - RESERVE_GB
        while self._held and sum(self._held.values()) > room:
            del self._held[next(iter(self._held))]
        self._held[checkpoint] = size

    def keep_only(self, checkpoints: Collection[str]) -> None:
        """Models whose loader output the cache dropped are freed: nothing references them any more."""
        self._held = {k: v for k, v in self._held.items() if k in checkpoints}

    def clear(self) -> None:
        """Everything unloaded (POST /free)."""
        self._held.clear()

    @property
    def used_gb(self) -> float:
        """GB the held checkpoints take."""
        return sum(self._held.values())
