"""Load the manifest and JSON templates; fill parameters at the object level, chain LoRAs, validate graphs."""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.comfy.protocol import InputSpec, ObjectInfo
from orchestrator.errors import ConfigError, WorkflowError
from orchestrator.models import Family, GenerationParams, LoraSpec, Mode

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "workflows"
MANIFEST = "manifest.yaml"
#: ComfyUI's KSampler seed is an unsigned 64-bit integer: what a graph accepts (the seeds we pick: models.MAX_SEED)
GRAPH_MAX_SEED = 2**64 - 1
#: class types whose outputs 0 and 1 are MODEL and CLIP, i.e. what a LoraLoader can follow
CHECKPOINT_LOADERS = frozenset({"CheckpointLoaderSimple", "CheckpointLoader"})

PARAMETERS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "checkpoint",
        "width",
        "height",
        "steps",
        "cfg",
        "sampler",
        "scheduler",
        "seed",
        "denoise",
        "input_image",
        "upscale_model",
    }
)
_SAMPLING = frozenset({"prompt", "negative_prompt", "checkpoint", "steps", "cfg", "sampler", "scheduler", "seed"})
#: parameters a template of each mode must bind, so no request field is silently ignored
REQUIRED_BINDINGS: Mapping[Mode, frozenset[str]] = {
    Mode.TXT2IMG: _SAMPLING | {"width", "height", "denoise"},
    Mode.IMG2IMG: _SAMPLING | {"width", "height", "denoise", "input_image"},
    Mode.UPSCALE: frozenset({"input_image", "upscale_model"}),
}
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}")
#: combo inputs naming a file we upload just before submitting: ComfyUI's LoadImage.VALIDATE_INPUTS replaces the
#: combo check with "does the file exist", and a cached /object_info cannot list a file uploaded a moment ago
_UPLOADED_FILE_INPUTS = frozenset({("LoadImage", "image")})


@dataclass(frozen=True, slots=True)
class Binding:
    """Where one parameter goes: an input of a node."""

    node: str
    input: str


@dataclass(frozen=True, slots=True)
class Template:
    """One workflow template: its graph (never mutated) and where each parameter goes."""

    name: str
    file: str
    families: frozenset[Family]
    mode: Mode
    supports_lora: bool
    graph: Mapping[str, Any]
    bindings: Mapping[str, tuple[Binding, ...]]
    defaults: Mapping[str, Any]
    model_node: str | None = None
    lora_slot: str | None = None

    def default(self, parameter: str) -> Any:
        """The literal the template's JSON holds for a parameter (first binding)."""
        b = self.bindings[parameter][0]
        return self.graph[b.node]["inputs"][b.input]


@dataclass(frozen=True, slots=True)
class RequiredModels:
    """The model files a node must hold to run a request."""

    checkpoint: str | None
    loras: tuple[str, ...] = ()
    upscale_model: str | None = None


def is_link(value: Any) -> bool:
    """True for a ComfyUI link: `["<node id>", <output index>]`."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


class WorkflowEngine:
    """Turns GenerationParams into ComfyUI API-format graphs from the shipped templates."""

    def __init__(self, templates: Sequence[Template]) -> None:
        self.templates: dict[str, Template] = {t.name: t for t in templates}

    @classmethod
    def load(cls, directory: Path | None = None) -> WorkflowEngine:
        """Read manifest.yaml and every template it names; raise ConfigError naming the file and key."""
        directory = directory or DEFAULT_DIR
        engine = cls(_load_manifest(directory))
        log.debug("loaded %d workflow templates from %s", len(engine.templates), directory)
        return engine

    def template_for(self, params: GenerationParams) -> str:
        """The template name for a request's family, mode and LoRAs."""
        wanted = [t for t in self.templates.values() if t.mode is params.mode and params.family in t.families]
        if params.loras:
            wanted = [t for t in wanted if t.supports_lora]
            # a template with a ready LoRA slot beats chaining every LoRA by hand
            wanted.sort(key=lambda t: t.lora_slot is None)
        else:
            wanted = [t for t in wanted if t.lora_slot is None]
        if not wanted:
            extra = " with LoRAs" if params.loras else ""
            raise WorkflowError(f"no workflow template for {params.family.value} {params.mode.value}{extra}")
        return wanted[0].name

    def build(self, params: GenerationParams, *, input_image: str | None = None) -> dict[str, Any]:
        """A new graph for the request: parameters set on node inputs as objects, LoRAs chained."""
        t = self.templates[self.template_for(params)]
        graph = copy.deepcopy(dict(t.graph))
        values = self._values(t, params, input_image)
        for parameter, targets in t.bindings.items():
            value = values.get(parameter)
            if value is None:
                continue  # keep the template's literal default (e.g. no checkpoint given)
            for b in targets:
                graph[b.node]["inputs"][b.input] = value
        loras = list(params.loras)
        if loras and t.lora_slot is not None:
            first = loras.pop(0)
            graph[t.lora_slot]["inputs"].update(
                lora_name=first.name, strength_model=first.strength_model, strength_clip=first.strength_clip
            )
            _chain_loras(graph, t.lora_slot, loras)
        elif loras:
            assert t.model_node is not None  # checked on load for every supports_lora template
            _chain_loras(graph, t.model_node, loras)
        return graph

    def inject_loras(self, graph: dict[str, Any], loras: Sequence[LoraSpec]) -> dict[str, Any]:
        """A copy of the graph with LoraLoaders chained after its checkpoint loader (0 LoRAs: unchanged)."""
        if not loras:
            return graph
        loaders = [nid for nid, node in graph.items() if node.get("class_type") in CHECKPOINT_LOADERS]
        if len(loaders) != 1:
            raise WorkflowError(f"cannot add LoRAs: the graph has {len(loaders)} checkpoint loaders, expected 1")
        out = copy.deepcopy(graph)
        _chain_loras(out, loaders[0], loras)
        return out

    def validate(self, graph: Mapping[str, Any], info: ObjectInfo) -> None:
        """Raise WorkflowError naming each node that this ComfyUI server would refuse, and why."""
        problems = _graph_problems(graph, info)
        if problems:
            text = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
            raise WorkflowError(text, user_message=f"The workflow does not fit the GPU node: {problems[0]}")

    def required_models(self, params: GenerationParams) -> RequiredModels:
        """Checkpoint, LoRAs and upscale model a node must hold for this request."""
        t = self.templates[self.template_for(params)]
        checkpoint = upscale = None
        if "checkpoint" in t.bindings:
            checkpoint = params.checkpoint or str(t.default("checkpoint"))
        if "upscale_model" in t.bindings:
            upscale = params.upscale_model or str(t.default("upscale_model"))
        return RequiredModels(checkpoint=checkpoint, loras=tuple(x.name for x in params.loras), upscale_model=upscale)

    @staticmethod
    def _values(t: Template, p: GenerationParams, input_image: str | None) -> dict[str, Any]:
        if not isinstance(p.seed, int) or isinstance(p.seed, bool) or not 0 <= p.seed <= GRAPH_MAX_SEED:
            raise WorkflowError(f"seed {p.seed!r} is outside 0..2**64-1")
        if "input_image" in t.bindings and not input_image:
            raise WorkflowError(f"template {t.name} ({t.mode.value}) needs an input image uploaded to the node")
        for name, v in (("cfg", p.cfg), ("denoise", p.denoise)):
            if not math.isfinite(v):
                raise WorkflowError(f"{name} {v!r} is not a finite number")
        return {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt,
            "checkpoint": p.checkpoint or None,
            "width": p.width,
            "height": p.height,
            "steps": p.steps,
            "cfg": float(p.cfg),
            "sampler": p.sampler,
            "scheduler": p.scheduler,
            "seed": p.seed,
            "denoise": float(p.denoise),
            "input_image": input_image,
            "upscale_model": p.upscale_model or None,
        }


def _chain_loras(graph: dict[str, Any], anchor: str, loras: Sequence[LoraSpec]) -> None:
    """Insert LoraLoaders after `anchor` (MODEL 0, CLIP 1) and move every consumer of those outputs to the last."""
    if not loras:
        return
    consumers = [
        (node["inputs"], key, value[1])
        for node in graph.values()
        for key, value in node.get("inputs", {}).items()
        if is_link(value) and value[0] == anchor and value[1] in (0, 1)
    ]
    next_id = 1 + max((int(n) for n in graph if n.isdigit()), default=0)
    prev = anchor
    for lora in loras:
        while str(next_id) in graph:
            next_id += 1
        nid = str(next_id)
        graph[nid] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": [prev, 0],
                "clip": [prev, 1],
                "lora_name": lora.name,
                "strength_model": float(lora.strength_model),
                "strength_clip": float(lora.strength_clip),
            },
        }
        prev = nid
    for inputs, key, output in consumers:
        inputs[key] = [prev, output]


def _graph_problems(graph: Mapping[str, Any], info: ObjectInfo) -> list[str]:
    problems: list[str] = []
    has_output = False
    for nid, node in graph.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("inputs"), Mapping):
            problems.append(f"node {nid}: not a {{class_type, inputs}} object")
            continue
        ct = node.get("class_type")
        schema = info.nodes.get(ct) if isinstance(ct, str) else None
        if schema is None:
            problems.append(f"node {nid}: class_type {ct!r} does not exist on this node")
            continue
        has_output = has_output or schema.output_node
        where = f"node {nid} ({ct})"
        inputs = node["inputs"]
        for name, spec in schema.inputs.items():
            if name not in inputs:
                if spec.required:
                    problems.append(f"{where}: required input {name} is missing")
                continue
            if (ct, name) in _UPLOADED_FILE_INPUTS:
                if not isinstance(inputs[name], str) or not inputs[name]:
                    problems.append(f"{where}: {name} must name an uploaded file, got {_short(inputs[name])}")
                continue
            problems.extend(_input_problems(where, name, inputs[name], spec, graph, info))
    if graph and not has_output:
        problems.append("the graph has no output node (such as SaveImage)")
    return problems


def _input_problems(
    where: str, name: str, value: Any, spec: InputSpec, graph: Mapping[str, Any], info: ObjectInfo
) -> list[str]:
    if is_link(value):
        src = graph.get(value[0])
        if src is None:
            return [f"{where}: {name} links to node {value[0]}, which is not in the graph"]
        src_class = src.get("class_type") if isinstance(src, Mapping) else None
        src_schema = info.nodes.get(src_class) if isinstance(src_class, str) else None
        if src_schema is None:
            return []  # the source node's own problem is reported on that node
        if not 0 <= value[1] < len(src_schema.outputs):
            return [
                f"{where}: {name} links to output {value[1]} of node {value[0]}, which has {len(src_schema.outputs)}"
            ]
        got = src_schema.outputs[value[1]]
        if spec.is_link and "*" not in (got, spec.type) and got != spec.type:
            return [f"{where}: {name} expects {spec.type} but node {value[0]} output {value[1]} is {got}"]
        return []
    if spec.is_link:
        return [f"{where}: {name} must be a link to a {spec.type} output, got {_short(value)}"]
    kind = spec.type
    if spec.options is not None or kind == "COMBO":
        options = tuple(spec.options or ())
        if value not in options:
            has = ", ".join(options[:8]) + (", ..." if len(options) > 8 else "")
            return [f"{where}: {name} {_short(value)} is not on this node (has: {has or 'nothing'})"]
        return []
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{where}: {name} must be a number, got {_short(value)}"]
        if kind == "INT" and not isinstance(value, int):
            return [f"{where}: {name} must be an integer, got {value!r}"]
        if spec.min is not None and value < spec.min:
            return [f"{where}: {name} {value} is below the minimum {spec.min:g}"]
        if spec.max is not None and value > spec.max:
            return [f"{where}: {name} {value} is above the maximum {spec.max:g}"]
        return []
    if kind == "STRING" and not isinstance(value, str):
        return [f"{where}: {name} must be text, got {_short(value)}"]
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return [f"{where}: {name} must be true or false, got {_short(value)}"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- loading -----------------------------------------------------------------------------------


def _load_manifest(directory: Path) -> list[Template]:
    path = directory / MANIFEST
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(where, "", f"cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(where, "", f"not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(where, "", "expected a mapping with `templates`")
    unknown = sorted(k for k in raw if not str(k).startswith("_") and k not in ("version", "templates"))
    if unknown:
        raise ConfigError(where, unknown[0], "unknown key")
    if raw.get("version", 1) != 1:
        raise ConfigError(where, "version", f"expected 1, got {raw.get('version')!r}")
    entries = raw.get("templates")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(where, "templates", "expected a non-empty list")
    templates: list[Template] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        t = _load_template(directory, where, f"templates[{i}]", entry)
        if t.name in seen:
            raise ConfigError(where, f"templates[{i}].name", f"duplicate template name {t.name!r}")
        seen.add(t.name)
        templates.append(t)
    return templates


_TEMPLATE_KEYS = frozenset(
    {"name", "file", "families", "mode", "supports_lora", "model_node", "lora_slot", "defaults", "bindings"}
)


def _load_template(directory: Path, where: str, key: str, entry: Any) -> Template:
    if not isinstance(entry, dict):
        raise ConfigError(where, key, "expected a mapping")
    for k in entry:
        if k not in _TEMPLATE_KEYS:
            raise ConfigError(where, f"{key}.{k}", f"unknown key (expected one of {', '.join(sorted(_TEMPLATE_KEYS))})")
    for k in ("name", "file", "families", "mode", "bindings"):
        if k not in entry:
            raise ConfigError(where, f"{key}.{k}", "missing")
    name, file = entry["name"], entry["file"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ConfigError(where, f"{key}.name", f"expected a plain name, got {name!r}")
    if not isinstance(file, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+\.json", file) or ".." in file:
        raise ConfigError(where, f"{key}.file", f"expected a .json file name in {directory}, got {file!r}")
    families = entry["families"]
    if not isinstance(families, list) or not families:
        raise ConfigError(where, f"{key}.families", "expected a non-empty list")
    try:
        fams = frozenset(Family(f) for f in families)
    except ValueError as e:
        raise ConfigError(where, f"{key}.families", f"expected items of {', '.join(Family)}: {e}") from e
    try:
        mode = Mode(entry["mode"])
    except ValueError as e:
        raise ConfigError(where, f"{key}.mode", f"expected one of {', '.join(Mode)}") from e
    supports_lora = entry.get("supports_lora", False)
    if not isinstance(supports_lora, bool):
        raise ConfigError(where, f"{key}.supports_lora", "expected true or false")
    graph = _load_graph(directory / file)
    model_node = _node_ref(where, f"{key}.model_node", entry.get("model_node"), graph, file, CHECKPOINT_LOADERS)
    lora_slot = _node_ref(where, f"{key}.lora_slot", entry.get("lora_slot"), graph, file, frozenset({"LoraLoader"}))
    if supports_lora and model_node is None:
        raise ConfigError(where, f"{key}.model_node", "required when supports_lora is true")
    if lora_slot is not None and not supports_lora:
        raise ConfigError(where, f"{key}.lora_slot", "needs supports_lora: true")
    bindings = _load_bindings(where, f"{key}.bindings", entry["bindings"], graph, file)
    missing = sorted(REQUIRED_BINDINGS[mode] - bindings.keys())
    if missing:
        raise ConfigError(where, f"{key}.bindings", f"a {mode.value} template must bind {', '.join(missing)}")
    defaults = entry.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(where, f"{key}.defaults", "expected a mapping")
    for param, value in defaults.items():
        if param not in bindings:
            raise ConfigError(where, f"{key}.defaults.{param}", "not a bound parameter of this template")
        b = bindings[param][0]
        literal = graph[b.node]["inputs"][b.input]
        if literal != value:
            raise ConfigError(where, f"{key}.defaults.{param}", f"is {value!r} but {file} holds {literal!r}")
    return Template(
        name=name,
        file=file,
        families=fams,
        mode=mode,
        supports_lora=supports_lora,
        graph=graph,
        bindings=bindings,
        defaults=dict(defaults),
        model_node=model_node,
        lora_slot=lora_slot,
    )


def _load_graph(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(where, "", f"cannot read: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(where, "", f"not valid JSON: {e}") from e
    if not isinstance(graph, dict) or not graph:
        raise ConfigError(where, "", "expected a non-empty API-format graph {node id: {class_type, inputs}}")
    for nid, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise ConfigError(where, nid, "expected {class_type, inputs}")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise ConfigError(where, f"{nid}.inputs", "expected a mapping")
        for name, value in inputs.items():
            if is_link(value) and value[0] not in graph:
                raise ConfigError(where, f"{nid}.inputs.{name}", f"links to missing node {value[0]}")
            # templates hold literal defaults only: placeholders belong to string-replacement filling, which we never do
            if isinstance(value, str) and _PLACEHOLDER.search(value):
                raise ConfigError(where, f"{nid}.inputs.{name}", f"holds a placeholder {value!r}; use a literal")
    return graph


def _node_ref(
    where: str, key: str, value: Any, graph: Mapping[str, Any], file: str, classes: frozenset[str]
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in graph:
        raise ConfigError(where, key, f"node {value!r} is not in {file}")
    if graph[value]["class_type"] not in classes:
        raise ConfigError(
            where, key, f"node {value} in {file} is {graph[value]['class_type']}, not {'/'.join(classes)}"
        )
    return value


def _load_bindings(
    where: str, key: str, raw: Any, graph: Mapping[str, Any], file: str
) -> dict[str, tuple[Binding, ...]]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(where, key, "expected a mapping of parameter -> [node id, input name]")
    out: dict[str, tuple[Binding, ...]] = {}
    for param, target in raw.items():
        k = f"{key}.{param}"
        if param not in PARAMETERS:
            raise ConfigError(where, k, f"unknown parameter (expected one of {', '.join(sorted(PARAMETERS))})")
        pairs = [target] if isinstance(target, list) and target and isinstance(target[0], str) else target
        if not isinstance(pairs, list) or not pairs:
            raise ConfigError(where, k, "expected [node id, input name] or a list of them")
        found: list[Binding] = []
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise ConfigError(where, k, f"expected [node id, input name], got {pair!r}")
            nid, name = pair
            if nid not in graph:
                raise ConfigError(where, k, f"node {nid!r} is not in {file}")
            if name not in graph[nid]["inputs"]:
                raise ConfigError(where, k, f"node {nid} ({graph[nid]['class_type']}) in {file} has no input {name!r}")
            if is_link(graph[nid]["inputs"][name]):
                raise ConfigError(where, k, f"node {nid} input {name} in {file} is a link, not a value")
            found.append(Binding(nid, name))
        out[param] = tuple(found)
    return out
