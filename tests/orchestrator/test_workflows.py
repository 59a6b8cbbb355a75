"""WorkflowEngine: manifest loading, object-level filling, LoRA chaining and validation against /object_info."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.comfy.node_schemas import ModelFiles, object_info as sim_object_info
from orchestrator.comfy.parsing import parse_object_info
from orchestrator.comfy.protocol import InputSpec, NodeSchema, ObjectInfo
from orchestrator.errors import ConfigError, WorkflowError
from orchestrator.models import Family, GenerationParams, LoraSpec, Mode
from orchestrator.workflows import GRAPH_MAX_SEED, WorkflowEngine, is_link
from tests.orchestrator.hostile_prompts import HOSTILE_PROMPTS

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
CKPTS = ("v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors", "flux1-dev-fp8.safetensors")
LORAS = ("example_lora.safetensors", "detail.safetensors", "grain.safetensors", "style.safetensors")
SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "ddim")
SCHEDULERS = ("normal", "karras", "simple", "sgm_uniform")


def _inp(name, type_, *, required=True, options=None, lo=None, hi=None):
    link = type_ not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
    return InputSpec(name=name, type=type_, required=required, options=options, min=lo, max=hi, is_link=link)


def _node(class_type, inputs, outputs, output_node=False):
    return NodeSchema(
        class_type=class_type, inputs={i.name: i for i in inputs}, outputs=tuple(outputs), output_node=output_node
    )


def object_info(ckpts=CKPTS, loras=LORAS, upscalers=("4x-UltraSharp.pth",)) -> ObjectInfo:
    """A ComfyUI /object_info for the classes our templates use, with the real input names and ranges."""
    nodes = [
        _node("CheckpointLoaderSimple", [_inp("ckpt_name", "COMBO", options=tuple(ckpts))], ["MODEL", "CLIP", "VAE"]),
        _node(
            "LoraLoader",
            [
                _inp("model", "MODEL"),
                _inp("clip", "CLIP"),
                _inp("lora_name", "COMBO", options=tuple(loras)),
                _inp("strength_model", "FLOAT", lo=-100, hi=100),
                _inp("strength_clip", "FLOAT", lo=-100, hi=100),
            ],
            ["MODEL", "CLIP"],
        ),
        _node("CLIPTextEncode", [_inp("text", "STRING"), _inp("clip", "CLIP")], ["CONDITIONING"]),
        _node(
            "FluxGuidance",
            [_inp("conditioning", "CONDITIONING"), _inp("guidance", "FLOAT", lo=0, hi=100)],
            ["CONDITIONING"],
        ),
        _node(
            "EmptyLatentImage",
            [
                _inp("width", "INT", lo=16, hi=16384),
                _inp("height", "INT", lo=16, hi=16384),
                _inp("batch_size", "INT", lo=1, hi=4096),
            ],
            ["LATENT"],
        ),
        _node(
            "KSampler",
            [
                _inp("model", "MODEL"),
                _inp("seed", "INT", lo=0, hi=GRAPH_MAX_SEED),
                _inp("steps", "INT", lo=1, hi=10000),
                _inp("cfg", "FLOAT", lo=0, hi=100),
                _inp("sampler_name", "COMBO", options=SAMPLERS),
                _inp("scheduler", "COMBO", options=SCHEDULERS),
                _inp("positive", "CONDITIONING"),
                _inp("negative", "CONDITIONING"),
                _inp("latent_image", "LATENT"),
                _inp("denoise", "FLOAT", lo=0, hi=1),
            ],
            ["LATENT"],
        ),
        _node("VAEDecode", [_inp("samples", "LATENT"), _inp("vae", "VAE")], ["IMAGE"]),
        _node("VAEEncode", [_inp("pixels", "IMAGE"), _inp("vae", "VAE")], ["LATENT"]),
        _node("LoadImage", [_inp("image", "COMBO", options=("example.png",))], ["IMAGE", "MASK"]),
        _node(
            "ImageScale",
            [
                _inp("image", "IMAGE"),
                _inp("upscale_method", "COMBO", options=("nearest-exact", "bilinear", "area", "bicubic", "lanczos")),
                _inp("width", "INT", lo=0, hi=16384),
                _inp("height", "INT", lo=0, hi=16384),
                _inp("crop", "COMBO", options=("disabled", "center")),
            ],
            ["IMAGE"],
        ),
        _node("UpscaleModelLoader", [_inp("model_name", "COMBO", options=tuple(upscalers))], ["UPSCALE_MODEL"]),
        _node("ImageUpscaleWithModel", [_inp("upscale_model", "UPSCALE_MODEL"), _inp("image", "IMAGE")], ["IMAGE"]),
        _node("SaveImage", [_inp("images", "IMAGE"), _inp("filename_prefix", "STRING")], [], output_node=True),
    ]
    return ObjectInfo(nodes={n.class_type: n for n in nodes})


@pytest.fixture(scope="module")
def engine() -> WorkflowEngine:
    return WorkflowEngine.load(WORKFLOWS)


@pytest.fixture(scope="module")
def info() -> ObjectInfo:
    return object_info()


def params(**kw) -> GenerationParams:
    kw.setdefault("prompt", "a lighthouse at dusk")
    return GenerationParams(**kw)


def needs_image(p: GenerationParams) -> str | None:
    return "vibes_job.png" if p.mode is not Mode.TXT2IMG else None


def assert_links_intact(graph: dict, info: ObjectInfo) -> None:
    for nid, node in graph.items():
        for name, value in node["inputs"].items():
            if is_link(value):
                assert value[0] in graph, f"node {nid}.{name} links to missing {value[0]}"
                outputs = info.nodes[graph[value[0]]["class_type"]].outputs
                assert 0 <= value[1] < len(outputs), f"node {nid}.{name} links to a missing output"


CASES = [
    (Family.SD15, Mode.TXT2IMG, 0, "sd15_txt2img"),
    (Family.SD15, Mode.IMG2IMG, 0, "sd15_img2img"),
    (Family.SD15, Mode.TXT2IMG, 2, "sd15_txt2img"),
    (Family.SDXL, Mode.TXT2IMG, 0, "sdxl_txt2img"),
    (Family.SDXL, Mode.IMG2IMG, 0, "sdxl_img2img"),
    (Family.SDXL, Mode.TXT2IMG, 1, "sdxl_with_lora"),
    (Family.PONY, Mode.TXT2IMG, 3, "sdxl_with_lora"),
    (Family.ILLUSTRIOUS, Mode.IMG2IMG, 1, "sdxl_img2img"),
    (Family.FLUX, Mode.TXT2IMG, 0, "flux_txt2img"),
    (Family.FLUX, Mode.IMG2IMG, 0, "flux_img2img"),
    (Family.SDXL, Mode.UPSCALE, 0, "upscale_esrgan"),
    (Family.FLUX, Mode.UPSCALE, 0, "upscale_esrgan"),
]


def test_manifest_ships_every_template_with_real_class_names(engine):
    assert set(engine.templates) == {
        "sd15_txt2img",
        "sd15_img2img",
        "sdxl_txt2img",
        "sdxl_img2img",
        "sdxl_with_lora",
        "flux_txt2img",
        "flux_img2img",
        "upscale_esrgan",
    }
    for t in engine.templates.values():
        classes = [n["class_type"] for n in t.graph.values()]
        assert "CheckpointLoader" not in classes, t.name
        saves = [n for n in t.graph.values() if n["class_type"] == "SaveImage"]
        assert len(saves) == 1 and saves[0]["inputs"]["filename_prefix"] == "vibes", t.name
        raw = (WORKFLOWS / t.file).read_text()
        assert "{{" not in raw, f"{t.file} holds a placeholder"


@pytest.mark.parametrize(("family", "mode", "n_loras", "expected"), CASES)
def test_every_case_validates_against_the_simulators_object_info(engine, family, mode, n_loras, expected):
    """The simulator's /object_info (parsed as a real node's would be) accepts every filled template."""
    files = ModelFiles(checkpoints=CKPTS, loras=LORAS, upscale_models=("4x-UltraSharp.pth",))
    info = parse_object_info(json.loads(json.dumps(sim_object_info(files))))
    loras = tuple(LoraSpec(LORAS[i], 0.5, 0.25) for i in range(n_loras))
    p = params(family=family, mode=mode, loras=loras, upscale_model="4x-UltraSharp.pth")
    # the uploaded name is not in the cached LoadImage combo: like ComfyUI, validation must not require it
    engine.validate(engine.build(p, input_image="vibes_fresh_upload.png"), info)


def test_every_template_json_validates_as_shipped(engine, info):
    """The literal defaults in each JSON file are a graph ComfyUI would accept."""
    for t in engine.templates.values():
        engine.validate(copy.deepcopy(dict(t.graph)), info)


@pytest.mark.parametrize(("family", "mode", "n_loras", "expected"), CASES)
def test_template_for_picks_by_family_mode_and_loras(engine, family, mode, n_loras, expected):
    loras = tuple(LoraSpec(LORAS[i]) for i in range(n_loras))
    assert engine.template_for(params(family=family, mode=mode, loras=loras)) == expected


@pytest.mark.parametrize(("family", "mode", "n_loras", "expected"), CASES)
def test_every_case_builds_a_graph_that_validates(engine, info, family, mode, n_loras, expected):
    loras = tuple(LoraSpec(LORAS[i], 0.5, 0.25) for i in range(n_loras))
    p = params(family=family, mode=mode, loras=loras, checkpoint=CKPTS[0], upscale_model="4x-UltraSharp.pth")
    graph = engine.build(p, input_image=needs_image(p))
    engine.validate(graph, info)
    assert_links_intact(graph, info)
    names = [n["inputs"]["lora_name"] for n in graph.values() if n["class_type"] == "LoraLoader"]
    assert sorted(names) == sorted(x.name for x in loras)


@pytest.mark.parametrize(("case", "text"), HOSTILE_PROMPTS, ids=[c for c, _ in HOSTILE_PROMPTS])
@pytest.mark.parametrize("family", [Family.SD15, Family.FLUX])
def test_hostile_prompt_reaches_clip_text_verbatim_after_json_round_trip(engine, info, case, text, family):
    assert len(HOSTILE_PROMPTS) >= 30
    p = params(prompt=text, negative_prompt=text[::-1], family=family, seed=GRAPH_MAX_SEED)
    t = engine.templates[engine.template_for(p)]
    graph = json.loads(json.dumps(engine.build(p)))
    pos, neg = t.bindings["prompt"][0], t.bindings["negative_prompt"][0]
    assert graph[pos.node]["class_type"] == "CLIPTextEncode"
    assert graph[pos.node]["inputs"]["text"] == text
    assert graph[neg.node]["inputs"]["text"] == text[::-1]
    assert set(graph) == set(t.graph), "filling must not add or drop nodes"
    for nid, node in graph.items():
        assert node["class_type"] == t.graph[nid]["class_type"]
        for name, value in t.graph[nid]["inputs"].items():
            if is_link(value):
                assert graph[nid]["inputs"][name] == list(value), f"link {nid}.{name} changed"
    assert graph[t.bindings["seed"][0].node]["inputs"]["seed"] == GRAPH_MAX_SEED
    assert_links_intact(graph, info)
    engine.validate(graph, info)


def test_build_returns_a_new_graph_and_leaves_the_template_alone(engine):
    t = engine.templates["sd15_txt2img"]
    before = copy.deepcopy(dict(t.graph))
    a = engine.build(params(prompt="one", seed=1))
    b = engine.build(params(prompt="two", seed=2))
    a["6"]["inputs"]["clip"][0] = "mutated"
    assert dict(t.graph) == before
    assert b["6"]["inputs"]["text"] == "two" and b["6"]["inputs"]["clip"] == ["4", 1]


def test_build_sets_each_parameter_on_its_node_input(engine):
    p = params(
        family=Family.SDXL,
        prompt="pos",
        negative_prompt="neg",
        checkpoint="sd_xl_base_1.0.safetensors",
        width=832,
        height=1216,
        steps=31,
        cfg=5.5,
        sampler="dpmpp_2m_sde",
        scheduler="karras",
        seed=123456789,
    )
    g = engine.build(p)
    ks = g["3"]["inputs"]
    assert g["3"]["class_type"] == "KSampler"
    assert (ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"], ks["seed"], ks["denoise"]) == (
        31,
        5.5,
        "dpmpp_2m_sde",
        "karras",
        123456789,
        1.0,
    )
    assert g["5"]["inputs"] == {"width": 832, "height": 1216, "batch_size": 1}
    assert g["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"
    assert g["6"]["inputs"]["text"] == "pos" and g["7"]["inputs"]["text"] == "neg"


def test_empty_checkpoint_keeps_the_template_default(engine):
    g = engine.build(params(family=Family.FLUX, checkpoint=""))
    assert g["4"]["inputs"]["ckpt_name"] == "flux1-dev-fp8.safetensors"


def test_flux_has_guidance_between_text_encoder_and_sampler(engine):
    g = engine.build(params(family=Family.FLUX, cfg=1.0, scheduler="simple"))
    ks = g["3"]["inputs"]
    guidance = g[ks["positive"][0]]
    assert guidance["class_type"] == "FluxGuidance"
    assert g[guidance["inputs"]["conditioning"][0]]["class_type"] == "CLIPTextEncode"
    assert ks["cfg"] == 1.0 and ks["scheduler"] == "simple"
    assert engine.templates["flux_txt2img"].defaults["scheduler"] == "simple"


def test_img2img_graph_encodes_the_uploaded_image_with_denoise(engine):
    g = engine.build(params(mode=Mode.IMG2IMG, denoise=0.45, width=768, height=640), input_image="up (1).png")
    ks = g["3"]["inputs"]
    encode = g[ks["latent_image"][0]]
    assert encode["class_type"] == "VAEEncode" and ks["denoise"] == 0.45
    scale = g[encode["inputs"]["pixels"][0]]
    assert scale["class_type"] == "ImageScale" and (scale["inputs"]["width"], scale["inputs"]["height"]) == (768, 640)
    load = g[scale["inputs"]["image"][0]]
    assert load == {"class_type": "LoadImage", "inputs": {"image": "up (1).png"}}


def test_upscale_graph_loads_image_and_model(engine):
    g = engine.build(params(mode=Mode.UPSCALE, upscale_model="4x-UltraSharp.pth"), input_image="in.png")
    classes = sorted(n["class_type"] for n in g.values())
    assert classes == ["ImageUpscaleWithModel", "LoadImage", "SaveImage", "UpscaleModelLoader"]
    assert g["1"]["inputs"]["image"] == "in.png" and g["2"]["inputs"]["model_name"] == "4x-UltraSharp.pth"


@pytest.mark.parametrize("mode", [Mode.IMG2IMG, Mode.UPSCALE])
def test_modes_with_an_input_image_refuse_to_build_without_one(engine, mode):
    with pytest.raises(WorkflowError, match="input image"):
        engine.build(params(mode=mode, upscale_model="4x-UltraSharp.pth"))


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70])
def test_seed_outside_uint64_is_refused(engine, seed):
    with pytest.raises(WorkflowError, match="seed"):
        engine.build(params(seed=seed))


def test_loras_on_a_template_without_lora_support_are_refused(engine):
    with pytest.raises(WorkflowError, match="no workflow template"):
        engine.template_for(params(mode=Mode.UPSCALE, loras=(LoraSpec("a"),)))


def _consumers(graph: dict, source: str) -> set[tuple[str, str, int]]:
    return {
        (nid, name, v[1])
        for nid, n in graph.items()
        for name, v in n["inputs"].items()
        if is_link(v) and v[0] == source and v[1] in (0, 1)
    }


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_inject_loras_chains_and_rewires_every_model_and_clip_consumer(engine, info, n):
    base = engine.build(params())
    before = _consumers(base, "4")
    assert before == {("3", "model", 0), ("6", "clip", 1), ("7", "clip", 1)}
    loras = [LoraSpec(LORAS[i], strength_model=0.1 * (i + 1), strength_clip=0.2 * (i + 1)) for i in range(n)]
    out = engine.inject_loras(base, loras)
    if n == 0:
        assert out == base
        return
    new_ids = sorted(set(out) - set(base), key=int)
    assert len(new_ids) == n and len(out) == len(base) + n
    # the chain: first LoRA reads the checkpoint loader, each next one reads the previous
    prev = "4"
    for nid, lora in zip(new_ids, loras, strict=True):
        node = out[nid]
        assert node["class_type"] == "LoraLoader"
        assert node["inputs"]["model"] == [prev, 0] and node["inputs"]["clip"] == [prev, 1]
        assert node["inputs"]["lora_name"] == lora.name
        assert node["inputs"]["strength_model"] == pytest.approx(lora.strength_model)
        assert node["inputs"]["strength_clip"] == pytest.approx(lora.strength_clip)
        prev = nid
    # every former consumer now reads the last LoRA; VAE (output 2) still comes from the loader
    assert _consumers(out, prev) == before
    assert _consumers(out, "4") == {(new_ids[0], "model", 0), (new_ids[0], "clip", 1)}
    assert out["8"]["inputs"]["vae"] == ["4", 2]
    assert base["3"]["inputs"]["model"] == ["4", 0], "the input graph is not modified"
    engine.validate(out, info)


def test_inject_loras_new_ids_never_collide_with_odd_existing_ids(engine, info):
    base = engine.build(params())
    renamed = {"ckpt" if k == "4" else k: v for k, v in base.items()}
    text = json.dumps(renamed).replace('["4", ', '["ckpt", ')
    graph = json.loads(text)
    graph["99"] = graph.pop("9")
    out = engine.inject_loras(graph, [LoraSpec(LORAS[1]), LoraSpec(LORAS[2])])
    added = set(out) - set(graph)
    assert len(added) == 2 and not added & set(graph)
    assert all(out[a]["class_type"] == "LoraLoader" for a in added)
    engine.validate(out, info)


def test_inject_loras_needs_exactly_one_checkpoint_loader(engine):
    upscale = engine.build(params(mode=Mode.UPSCALE), input_image="x.png")
    with pytest.raises(WorkflowError, match="checkpoint loader"):
        engine.inject_loras(upscale, [LoraSpec("a")])


def test_lora_slot_template_fills_the_slot_then_chains_the_rest(engine, info):
    loras = (LoraSpec(LORAS[1], 0.7, 0.6), LoraSpec(LORAS[2], 0.3, 0.3))
    g = engine.build(params(family=Family.SDXL, loras=loras))
    assert g["10"]["inputs"]["lora_name"] == LORAS[1] and g["10"]["inputs"]["strength_model"] == 0.7
    last = g["3"]["inputs"]["model"][0]
    assert g[last]["inputs"]["lora_name"] == LORAS[2]
    assert g[last]["inputs"]["model"] == ["10", 0]
    assert g["6"]["inputs"]["clip"] == [last, 1] and g["7"]["inputs"]["clip"] == [last, 1]
    engine.validate(g, info)


# --- validation -----------------------------------------------------------------------------


def test_validate_names_the_node_and_the_missing_checkpoint(engine):
    g = engine.build(params(checkpoint="x.safetensors"))
    with pytest.raises(WorkflowError) as e:
        engine.validate(g, object_info(ckpts=("a.safetensors", "b.safetensors")))
    assert (
        "node 4 (CheckpointLoaderSimple): ckpt_name 'x.safetensors' is not on this node"
        " (has: a.safetensors, b.safetensors)" in str(e.value)
    )
    assert "CheckpointLoaderSimple" in e.value.user_message


def test_validate_names_a_missing_lora(engine):
    g = engine.build(params(loras=(LoraSpec("nope.safetensors"),)))
    with pytest.raises(WorkflowError, match=r"\(LoraLoader\): lora_name 'nope.safetensors' is not on this node"):
        engine.validate(g, object_info())


def test_validate_rejects_unknown_class_type(engine, info):
    g = engine.build(params())
    g["9"]["class_type"] = "SaveImageWebsocket"
    with pytest.raises(WorkflowError, match=r"node 9: class_type 'SaveImageWebsocket' does not exist"):
        engine.validate(g, info)


def test_validate_rejects_missing_required_input(engine, info):
    g = engine.build(params())
    del g["3"]["inputs"]["scheduler"]
    with pytest.raises(WorkflowError, match=r"node 3 \(KSampler\): required input scheduler is missing"):
        engine.validate(g, info)


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("steps", 0, "below the minimum 1"),
        ("steps", 20000, "above the maximum 10000"),
        ("denoise", 1.5, "above the maximum 1"),
        ("steps", 2.5, "must be an integer"),
        ("cfg", "7", "must be a number"),
        ("sampler_name", "warp_drive", "is not on this node"),
    ],
)
def test_validate_rejects_values_out_of_range(engine, info, field, value, pattern):
    g = engine.build(params())
    g["3"]["inputs"][field] = value
    with pytest.raises(WorkflowError, match=rf"node 3 \(KSampler\): {field} .*{pattern}"):
        engine.validate(g, info)


def test_validate_rejects_link_to_missing_node_and_output(engine, info):
    g = engine.build(params())
    g["8"]["inputs"]["samples"] = ["42", 0]
    with pytest.raises(
        WorkflowError, match=r"node 8 \(VAEDecode\): samples links to node 42, which is not in the graph"
    ):
        engine.validate(g, info)
    g = engine.build(params())
    g["8"]["inputs"]["vae"] = ["4", 7]
    with pytest.raises(WorkflowError, match=r"node 8 \(VAEDecode\): vae links to output 7 of node 4"):
        engine.validate(g, info)


def test_validate_rejects_a_link_of_the_wrong_type(engine, info):
    g = engine.build(params())
    g["8"]["inputs"]["vae"] = ["4", 0]
    with pytest.raises(WorkflowError, match=r"node 8 \(VAEDecode\): vae expects VAE but node 4 output 0 is MODEL"):
        engine.validate(g, info)


def test_validate_rejects_a_graph_without_output_node(engine, info):
    g = engine.build(params())
    del g["9"]
    with pytest.raises(WorkflowError, match="no output node"):
        engine.validate(g, info)


# --- required models --------------------------------------------------------------------------


def test_required_models_lists_checkpoint_loras_and_upscaler(engine):
    p = params(family=Family.SDXL, checkpoint="sd_xl_base_1.0.safetensors", loras=(LoraSpec("a"), LoraSpec("b")))
    r = engine.required_models(p)
    assert (r.checkpoint, r.loras, r.upscale_model) == ("sd_xl_base_1.0.safetensors", ("a", "b"), None)
    r = engine.required_models(params(family=Family.SD15))
    assert r.checkpoint == "v1-5-pruned-emaonly.safetensors"
    r = engine.required_models(params(mode=Mode.UPSCALE, upscale_model="RealESRGAN_x4.pth"))
    assert (r.checkpoint, r.loras, r.upscale_model) == (None, (), "RealESRGAN_x4.pth")


# --- manifest validation ----------------------------------------------------------------------


@pytest.fixture
def wf_copy(tmp_path: Path) -> Path:
    d = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, d)
    return d


def _edit_manifest(d: Path, fn) -> None:
    data = yaml.safe_load((d / "manifest.yaml").read_text())
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    fn(data)
    (d / "manifest.yaml").write_text(yaml.safe_dump(data))


def _sd15(data: dict) -> dict:
    return next(t for t in data["templates"] if t["name"] == "sd15_txt2img")


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (
            lambda d: _sd15(d)["bindings"].update(prompt=["77", "text"]),
            "templates[0].bindings.prompt",
            "node '77' is not in",
        ),
        (
            lambda d: _sd15(d)["bindings"].update(prompt=["6", "txt"]),
            "templates[0].bindings.prompt",
            "has no input 'txt'",
        ),
        (lambda d: _sd15(d)["bindings"].update(prompt=["6", "clip"]), "templates[0].bindings.prompt", "is a link"),
        (
            lambda d: _sd15(d)["bindings"].update(colour=["6", "text"]),
            "templates[0].bindings.colour",
            "unknown parameter",
        ),
        (lambda d: _sd15(d)["bindings"].pop("seed"), "templates[0].bindings", "must bind seed"),
        (lambda d: _sd15(d)["defaults"].update(steps=99), "templates[0].defaults.steps", "holds 10"),
        (lambda d: _sd15(d).update(families=["sd3"]), "templates[0].families", "expected items of"),
        (lambda d: _sd15(d).update(mode="inpaint"), "templates[0].mode", "expected one of"),
        (lambda d: _sd15(d).update(file="../x.json"), "templates[0].file", "expected a .json file name"),
        (lambda d: _sd15(d).update(model_node="3"), "templates[0].model_node", "is KSampler"),
        (lambda d: _sd15(d).update(colour="red"), "templates[0].colour", "unknown key"),
        (lambda d: d["templates"].append(dict(_sd15(d))), "templates[8].name", "duplicate"),
    ],
)
def test_bad_manifest_is_refused_naming_file_and_key(wf_copy, edit, key, problem):
    _edit_manifest(wf_copy, edit)
    with pytest.raises(ConfigError) as e:
        WorkflowEngine.load(wf_copy)
    assert e.value.file.endswith("manifest.yaml") and e.value.key == key
    assert problem in e.value.problem


def test_placeholder_in_template_json_is_refused(wf_copy):
    path = wf_copy / "sd15_txt2img.json"
    g = json.loads(path.read_text())
    g["6"]["inputs"]["text"] = "{{prompt}}"
    path.write_text(json.dumps(g))
    with pytest.raises(ConfigError) as e:
        WorkflowEngine.load(wf_copy)
    assert e.value.file.endswith("sd15_txt2img.json") and e.value.key == "6.inputs.text"


def test_template_json_with_a_dangling_link_is_refused(wf_copy):
    path = wf_copy / "sdxl_txt2img.json"
    g = json.loads(path.read_text())
    g["8"]["inputs"]["vae"] = ["404", 2]
    path.write_text(json.dumps(g))
    with pytest.raises(ConfigError, match=r"sdxl_txt2img.json: 8.inputs.vae: links to missing node 404"):
        WorkflowEngine.load(wf_copy)


def test_missing_manifest_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"manifest\.yaml: cannot read"):
        WorkflowEngine.load(tmp_path)


def test_default_directory_is_the_repo_workflows_dir():
    assert set(WorkflowEngine.load().templates) == set(WorkflowEngine.load(WORKFLOWS).templates)


def test_validate_accepts_a_freshly_uploaded_image_name_but_not_an_empty_one(engine, info):
    g = engine.build(params(mode=Mode.IMG2IMG), input_image="uploads/vibes_job (2).png")
    engine.validate(g, info)
    g["11"]["inputs"]["image"] = ""
    with pytest.raises(WorkflowError, match=r"node 11 \(LoadImage\): image must name an uploaded file"):
        engine.validate(g, info)
