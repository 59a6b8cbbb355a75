"""Shared helpers for the ComfyUI protocol, client and simulator tests: a small node and hand-built graphs."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from orchestrator.config import NodeConfig, SimNodeConfig
from orchestrator.models import Family, Tier

SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
LORA = "detail_tweaker.safetensors"
UPSCALER = "4x-UltraSharp.pth"
#: simulated seconds are multiplied by this: a 4-step 64² sd15 render takes well under a millisecond
SCALE = 0.001


def node_config(**sim: Any) -> NodeConfig:
    """A simulated node holding two checkpoints, one LoRA and one upscaler."""
    sim_cfg = SimNodeConfig(
        seconds_per_step={Family.SD15: 0.05, Family.SDXL: 0.3, Family.FLUX: 0.4},
        upscale_seconds=2.0,
        checkpoint_load_seconds=4.0,
        checkpoints=(SD15, SDXL),
        loras=(LORA,),
        upscale_models=(UPSCALER,),
        **sim,
    )
    return NodeConfig(
        id="gpu-test",
        name="Test GPU (simulated)",
        tier=Tier.PREMIUM,
        host="127.0.0.1",
        port=0,
        capabilities=("sd15", "sdxl", "upscale"),
        vram_gb=8,
        sim=sim_cfg,
    )


def txt2img(
    prompt: str = "a lighthouse at dusk",
    *,
    seed: int = 1,
    steps: int = 4,
    side: int = 64,
    ckpt: str = SD15,
    prefix: str = "vibes",
) -> dict[str, Any]:
    """A minimal ComfyUI API-format txt2img graph."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


def img2img(image_name: str, *, seed: int = 2, steps: int = 4, denoise: float = 0.5) -> dict[str, Any]:
    """A minimal img2img graph reading an uploaded image."""
    g = txt2img(seed=seed, steps=steps)
    g["10"] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
    g["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    g["3"]["inputs"]["latent_image"] = ["11", 0]
    g["3"]["inputs"]["denoise"] = denoise
    del g["5"]
    return g


def upscale_graph(image_name: str) -> dict[str, Any]:
    """LoadImage -> model upscale -> SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": UPSCALER}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"filename_prefix": "up", "images": ["3", 0]}},
    }


def png(side: int = 64, color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, "PNG")
    return buf.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


async def collect(watch, timeout: float = 10.0) -> list:
    """Every event of a watch until it ends."""

    async def run() -> list:
        return [ev async for ev in watch]

    return await asyncio.wait_for(run(), timeout)
