"""
The simulator's /object_info table: ComfyUI's own definitions of the nodes our workflows use, as raw dicts.

Raw dicts are allowed here because this *is* the wire format the simulator serves; the orchestrator reads it
only through parsing.parse_object_info. Input names, types, ranges and outputs follow ComfyUI's nodes.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: ComfyUI's MAX_RESOLUTION
MAX_RESOLUTION = 16384

SAMPLERS: tuple[str, ...] = (
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "deis",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
)
SCHEDULERS: tuple[str, ...] = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "linear_quadratic",
    "kl_optimal",
)
CHECKPOINT_CONFIGS: tuple[str, ...] = (
    "anything_v3.yaml",
    "v1-inference.yaml",
    "v1-inference_clip_skip_2.yaml",
    "v1-inference_clip_skip_2_fp16.yaml",
    "v1-inference_fp16.yaml",
    "v1-inpainting-inference.yaml",
    "v2-inference-v.yaml",
    "v2-inference-v_fp32.yaml",
    "v2-inference.yaml",
    "v2-inference_fp32.yaml",
    "v2-inpainting-inference.yaml",
)
UPSCALE_METHODS: tuple[str, ...] = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS: tuple[str, ...] = ("disabled", "center")


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The files a simulated node holds, which fill the combo inputs."""

    checkpoints: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    upscale_models: tuple[str, ...] = ()
    input_images: tuple[str, ...] = ()


def _combo(options: Sequence[str], legacy: bool, **extra: Any) -> list[Any]:
    # Newer ComfyUI sends ["COMBO", {"options": [...]}]; older sent the list itself as the type.
    if legacy:
        return [list(options), extra]
    return ["COMBO", {**extra, "options": list(options)}]


def _int(default: int, lo: int, hi: int, step: int = 1, **extra: Any) -> list[Any]:
    return ["INT", {"default": default, "min": lo, "max": hi, "step": step, **extra}]


def _float(default: float, lo: float, hi: float, step: float, **extra: Any) -> list[Any]:
    return ["FLOAT", {"default": default, "min": lo, "max": hi, "step": step, **extra}]


def _node(
    name: str,
    display: str,
    category: str,
    required: dict[str, list[Any]],
    outputs: Sequence[str],
    *,
    optional: dict[str, list[Any]] | None = None,
    hidden: dict[str, str] | None = None,
    output_node: bool = False,
    module: str = "nodes",
    description: str = "",
    deprecated: bool = False,
) -> dict[str, Any]:
    inputs: dict[str, Any] = {"required": required}
    if optional:
        inputs["optional"] = optional
    if hidden:
        inputs["hidden"] = hidden
    order: dict[str, list[str]] = {"required": list(required)}
    if optional:
        order["optional"] = list(optional)
    if hidden:
        order["hidden"] = list(hidden)
    info: dict[str, Any] = {
        "input": inputs,
        "input_order": order,
        "output": list(outputs),
        "output_is_list": [False] * len(outputs),
        "output_name": list(outputs),
        "name": name,
        "display_name": display,
        "description": description,
        "python_module": module,
        "category": category,
        "output_node": output_node,
    }
    if deprecated:
        info["deprecated"] = True
    return info


def object_info(files: ModelFiles, *, legacy_combos: bool = False) -> dict[str, dict[str, Any]]:
    """The whole /object_info answer for a node holding these files."""
    lg = legacy_combos
    image_upload = {"image_upload": True}
    nodes = [
        _node(
            "CheckpointLoaderSimple",
            "Load Checkpoint",
            "loaders",
            {"ckpt_name": _combo(files.checkpoints, lg, tooltip="The name of the checkpoint (model) to load.")},
            ("MODEL", "CLIP", "VAE"),
            description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
        ),
        _node(
            "CheckpointLoader",
            "Load Checkpoint With Config (DEPRECATED)",
            "advanced/loaders",
            {"config_name": _combo(CHECKPOINT_CONFIGS, lg), "ckpt_name": _combo(files.checkpoints, lg)},
            ("MODEL", "CLIP", "VAE"),
            deprecated=True,
        ),
        _node(
            "LoraLoader",
            "Load LoRA",
            "loaders",
            {
                "model": ["MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}],
                "clip": ["CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}],
                "lora_name": _combo(files.loras, lg, tooltip="The name of the LoRA."),
                "strength_model": _float(1.0, -100.0, 100.0, 0.01),
                "strength_clip": _float(1.0, -100.0, 100.0, 0.01),
            },
            ("MODEL", "CLIP"),
        ),
        _node(
            "CLIPTextEncode",
            "CLIP Text Encode (Prompt)",
            "conditioning",
            {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP", {}]},
            ("CONDITIONING",),
        ),
        _node(
            "EmptyLatentImage",
            "Empty Latent Image",
            "latent",
            {
                "width": _int(512, 16, MAX_RESOLUTION, 8),
                "height": _int(512, 16, MAX_RESOLUTION, 8),
                "batch_size": _int(1, 1, 4096),
            },
            ("LATENT",),
        ),
        _node(
            "KSampler",
            "KSampler",
            "sampling",
            {
                "model": ["MODEL", {}],
                "seed": _int(0, 0, 0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                "steps": _int(20, 1, 10000),
                "cfg": _float(8.0, 0.0, 100.0, 0.1, round=0.01),
                "sampler_name": _combo(SAMPLERS, lg),
                "scheduler": _combo(SCHEDULERS, lg),
                "positive": ["CONDITIONING", {}],
                "negative": ["CONDITIONING", {}],
                "latent_image": ["LATENT", {}],
                "denoise": _float(1.0, 0.0, 1.0, 0.01),
            },
            ("LATENT",),
        ),
        _node("VAEDecode", "VAE Decode", "latent", {"samples": ["LATENT", {}], "vae": ["VAE", {}]}, ("IMAGE",)),
        _node("VAEEncode", "VAE Encode", "latent", {"pixels": ["IMAGE", {}], "vae": ["VAE", {}]}, ("LATENT",)),
        _node(
            "LoadImage",
            "Load Image",
            "image",
            {"image": _combo(files.input_images, lg, **image_upload)},
            ("IMAGE", "MASK"),
        ),
        _node(
            "ImageScale",
            "Upscale Image",
            "image/upscaling",
            {
                "image": ["IMAGE", {}],
                "upscale_method": _combo(UPSCALE_METHODS, lg),
                "width": _int(512, 0, MAX_RESOLUTION),
                "height": _int(512, 0, MAX_RESOLUTION),
                "crop": _combo(CROP_METHODS, lg),
            },
            ("IMAGE",),
        ),
        _node(
            "UpscaleModelLoader",
            "Load Upscale Model",
            "loaders",
            {"model_name": _combo(files.upscale_models, lg)},
            ("UPSCALE_MODEL",),
            module="comfy_extras.nodes_upscale_model",
        ),
        _node(
            "ImageUpscaleWithModel",
            "Upscale Image (using Model)",
            "image/upscaling",
            {"upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]},
            ("IMAGE",),
            module="comfy_extras.nodes_upscale_model",
        ),
        _node(
            "SaveImage",
            "Save Image",
            "image",
            {
                "images": ["IMAGE", {"tooltip": "The images to save."}],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}],
            },
            (),
            hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
            output_node=True,
            description="Saves the input images to your ComfyUI output directory.",
        ),
        _node(
            "PreviewImage",
            "Preview Image",
            "image",
            {"images": ["IMAGE", {}]},
            (),
            hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
            output_node=True,
            description="Saves the input images to your ComfyUI output directory.",
        ),
        _node(
            "FluxGuidance",
            "FluxGuidance",
            "advanced/conditioning/flux",
            {"conditioning": ["CONDITIONING", {}], "guidance": _float(3.5, 0.0, 100.0, 0.1)},
            ("CONDITIONING",),
            module="comfy_extras.nodes_flux",
        ),
    ]
    return {n["name"]: n for n in nodes}
