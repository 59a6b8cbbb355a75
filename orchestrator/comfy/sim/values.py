"""The values flowing between the simulator's nodes (model, conditioning, latent), and decoding a latent."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from orchestrator.comfy.sim import render


@dataclass(frozen=True)
class Model:
    """A MODEL output: a checkpoint and the LoRAs applied to it."""

    checkpoint: str
    loras: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cond:
    """A CONDITIONING output: the encoded text."""

    text: str


@dataclass(frozen=True)
class Latent:
    """A LATENT output: its size and batch, the images it encodes, and once sampled, what it was sampled with."""

    width: int
    height: int
    batch: int = 1
    sources: tuple[Image.Image, ...] = ()
    prompt: str | None = None
    seed: int = 0
    denoise: float = 1.0


def decode(latent: Latent) -> tuple[Image.Image, ...]:
    """VAEDecode: render the stand-in images of a sampled latent."""
    out = []
    for i in range(latent.batch):
        prompt, seed = latent.prompt or "", latent.seed + i
        if latent.sources:
            source = latent.sources[min(i, len(latent.sources) - 1)]
            if latent.prompt is None:
                out.append(render.resize(source, latent.width, latent.height))
            else:
                out.append(render.render_img2img(source, prompt, seed, latent.denoise, latent.width, latent.height))
        else:
            out.append(render.render_txt2img(prompt, seed, latent.width, latent.height))
    return tuple(out)
