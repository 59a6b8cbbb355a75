"""Every workflow template, filled by the engine, is accepted by the simulator and yields a valid PNG via the client."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from orchestrator.comfy.client import ComfyClient
from orchestrator.comfy.protocol import Executed, ExecutionError, ExecutionSuccess
from orchestrator.comfy.sim import ComfySimulator
from orchestrator.config import DEFAULT_CHECKPOINTS, DEFAULT_UPSCALE_MODEL
from orchestrator.models import Family, GenerationParams, LoraSpec, Mode
from orchestrator.workflows import WorkflowEngine
from tests.orchestrator.farm import ROOT, farm_config

pytestmark = pytest.mark.timeout(60)

CASES = [
    (Family.SD15, Mode.TXT2IMG, ()),
    (Family.SD15, Mode.IMG2IMG, ()),
    (Family.SDXL, Mode.TXT2IMG, ()),
    (Family.SDXL, Mode.IMG2IMG, ()),
    (Family.SDXL, Mode.TXT2IMG, (LoraSpec("detail_tweaker.safetensors", 0.8, 0.6),)),
    (Family.PONY, Mode.TXT2IMG, (LoraSpec("detail_tweaker.safetensors"), LoraSpec("film_grain.safetensors", 0.4))),
    (Family.FLUX, Mode.TXT2IMG, ()),
    (Family.FLUX, Mode.IMG2IMG, ()),
    (Family.SD15, Mode.UPSCALE, ()),
]


@pytest.fixture
async def premium(tmp_path):
    cfg = farm_config(tmp_path)
    node = cfg.nodes[0]
    sim = ComfySimulator(
        node,
        time_scale=0.001,
        port=0,
        default_checkpoints=sorted(set(DEFAULT_CHECKPOINTS.values())),
        default_loras=["detail_tweaker.safetensors", "film_grain.safetensors"],
        default_upscale_models=[DEFAULT_UPSCALE_MODEL],
    )
    await sim.start()
    client = ComfyClient(sim.base_url)
    await client.start()
    yield client
    await client.close()
    await sim.stop()


def png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("family", "mode", "loras"), CASES, ids=lambda v: getattr(v, "value", None) or str(len(v)))
async def test_every_template_renders_a_png_on_the_simulator(premium, family, mode, loras):
    engine = WorkflowEngine.load(ROOT / "workflows")
    side = 256
    params = GenerationParams(
        prompt='a "lighthouse" at dusk\\n{{seed}}',
        family=family,
        checkpoint=DEFAULT_CHECKPOINTS[family],
        width=side,
        height=side,
        steps=3,
        seed=42,
        denoise=0.5 if mode is Mode.IMG2IMG else 1.0,
        loras=loras,
        mode=mode,
        upscale_model=DEFAULT_UPSCALE_MODEL if mode is Mode.UPSCALE else None,
    )
    name = None
    if mode is not Mode.TXT2IMG:
        name = await premium.upload_image(png(side), "input.png")
    graph = engine.build(params, input_image=name)
    engine.validate(graph, await premium.object_info())
    accepted = await premium.submit(graph)
    images = []
    async for ev in premium.watch(accepted.prompt_id):
        if isinstance(ev, Executed):
            images.extend(ev.images)
        elif isinstance(ev, ExecutionError):
            pytest.fail(ev.exception_message)
        elif isinstance(ev, ExecutionSuccess):
            break
    assert images
    data = await premium.view(images[0])
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    expected = side * 4 if mode is Mode.UPSCALE else side
    assert img.size == (expected, expected)
