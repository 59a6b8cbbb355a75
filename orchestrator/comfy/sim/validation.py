"""
Graph validation as ComfyUI's execution.validate_prompt does it, with its error shapes.

Also the graph walks the execution engine needs (dependency order, cache keys).

Raw ComfyUI dicts live here because this is the server side of the wire format.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from orchestrator.comfy.protocol import NodeSchema, ObjectInfo
from orchestrator.workflows import is_link


class Invalid(Exception):
    """The graph failed validation; carries the 400 body."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error
        self.node_errors = node_errors


def err(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    """One error in ComfyUI's shape (type, message, details, extra_info)."""
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _type_matches(received: str, expected: str) -> bool:
    # ComfyUI's validate_node_input: equal, "*" on either side, or overlapping comma-separated unions.
    if received == expected or "*" in (received, expected):
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


class Validator:
    """Validates one graph against a node table; only nodes an output depends on are checked."""

    def __init__(self, graph: dict[str, Any], info: ObjectInfo, raw: dict[str, Any], inputs: set[str]) -> None:
        self.graph = graph
        self.info = info
        self.raw = raw
        self.input_files = inputs
        self.checked: dict[str, bool] = {}
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self._visiting: set[str] = set()

    def schema(self, node_id: str) -> NodeSchema:
        """The node table's schema of a graph node's class."""
        return self.info.nodes[self.graph[node_id]["class_type"]]

    def run(self) -> tuple[list[str], dict[str, Any]]:
        """Good output node ids and the node_errors dict; raises Invalid when nothing can run."""
        for node_id, node in self.graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                raise Invalid(
                    err(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                    {},
                )
            if node["class_type"] not in self.info.nodes:
                raise Invalid(
                    err(
                        "invalid_prompt",
                        f"Cannot execute because node {node['class_type']} does not exist.",
                        f"Node ID '#{node_id}'",
                    ),
                    {},
                )
        outputs = [nid for nid in self.graph if self.schema(nid).output_node]
        if not outputs:
            raise Invalid(err("prompt_no_outputs", "Prompt has no outputs"), {})
        good: list[str] = []
        failed: list[str] = []
        for out in outputs:
            (good if self.validate(out) else failed).append(out)
        node_errors: dict[str, Any] = {}
        for node_id, errs in self.errors.items():
            node_errors[node_id] = {
                "errors": errs,
                "dependent_outputs": [o for o in failed if node_id in closure(self.graph, o)],
                "class_type": self.graph[node_id]["class_type"],
            }
        if not good:
            lines = []
            for node_id, entry in node_errors.items():
                lines.append(f"{entry['class_type']} {node_id}:")
                lines += [f"- {e['message']}: {e['details']}" for e in entry["errors"]]
            raise Invalid(
                err("prompt_outputs_failed_validation", "Prompt outputs failed validation", "\n".join(lines)),
                node_errors,
            )
        return good, node_errors

    def validate(self, node_id: str) -> bool:
        """Check one node and what it links to (once each); False when it or a dependency has errors."""
        if node_id in self.checked:
            return self.checked[node_id]
        if node_id in self._visiting:
            raise Invalid(err("invalid_prompt", "Dependency cycle detected", f"Node ID '#{node_id}'"), {})
        self._visiting.add(node_id)
        node = self.graph[node_id]
        schema = self.schema(node_id)
        raw_inputs = self.raw[schema.class_type]["input"]
        values = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        errors: list[dict[str, Any]] = []
        ok = True
        for name, spec in schema.inputs.items():
            config = (raw_inputs.get("required") or {}).get(name) or (raw_inputs.get("optional") or {}).get(name)
            if name not in values:
                if spec.required:
                    errors.append(err("required_input_missing", "Required input is missing", name, input_name=name))
                continue
            val = values[name]
            extra = {"input_name": name, "input_config": config, "received_value": val}
            if isinstance(val, list):
                linked_ok = self._check_link(name, val, spec.type, extra, errors)
                ok = ok and linked_ok
                continue
            if spec.is_link:
                errors.append(
                    err(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name,
                        **extra,
                    )
                )
                continue
            self._check_value(schema.class_type, name, val, spec, extra, errors)
        self._visiting.discard(node_id)
        if errors:
            self.errors[node_id] = errors
        result = ok and not errors
        self.checked[node_id] = result
        return result

    def _check_link(
        self, name: str, val: list[Any], expected: str, extra: dict[str, Any], errors: list[dict[str, Any]]
    ) -> bool:
        bad = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
        if not is_link(val):
            errors.append(err("bad_linked_input", bad, name, **extra))
            return True
        source, index = str(val[0]), int(val[1])
        if source not in self.graph:
            errors.append(err("bad_linked_input", bad, f"{name}, linked node '{source}' does not exist", **extra))
            return True
        outputs = self.schema(source).outputs
        if not 0 <= index < len(outputs):
            errors.append(
                err(
                    "bad_linked_input",
                    bad,
                    f"{name}, node '{source}' has no output {index}",
                    **extra,
                )
            )
            return True
        received = outputs[index]
        if not _type_matches(received, expected):
            errors.append(
                err(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({expected})",
                    input_name=name,
                    input_config=extra["input_config"],
                    received_type=received,
                    linked_node=val,
                )
            )
            return True
        # Errors of the linked node are reported on that node, not on this one.
        return self.validate(source)

    def _check_value(
        self, class_type: str, name: str, val: Any, spec: Any, extra: dict[str, Any], errors: list[dict[str, Any]]
    ) -> None:
        if spec.type in ("INT", "FLOAT"):
            try:
                num: float = int(val) if spec.type == "INT" else float(val)
            except (TypeError, ValueError) as ex:
                errors.append(
                    err(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {spec.type} value",
                        f"{name}, {val}, {ex}",
                        **extra,
                    )
                )
                return
            if spec.min is not None and num < spec.min:
                errors.append(
                    err("value_smaller_than_min", f"Value {num} smaller than min of {_fmt(spec.min)}", name, **extra)
                )
            elif spec.max is not None and num > spec.max:
                errors.append(
                    err("value_bigger_than_max", f"Value {num} bigger than max of {_fmt(spec.max)}", name, **extra)
                )
            return
        if class_type == "LoadImage" and name == "image":
            # LoadImage has its own VALIDATE_INPUTS in ComfyUI: any file in the input folder (subfolders too).
            if val not in self.input_files:
                errors.append(
                    err(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        f"image - Invalid image file: {val}",
                        **extra,
                    )
                )
            return
        if spec.type == "COMBO" and spec.options is not None and val not in spec.options:
            errors.append(
                err("value_not_in_list", "Value not in list", f"{name}: '{val}' not in {list(spec.options)}", **extra)
            )


def node_inputs(node: dict[str, Any]) -> dict[str, Any]:
    """A graph node's inputs; {} when they are not an object (possible on a node validation never looked at)."""
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def closure(graph: dict[str, Any], node_id: str) -> set[str]:
    """The node and every node it depends on through links."""
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in graph:
            continue
        seen.add(nid)
        inputs = graph[nid].get("inputs") or {}
        stack.extend(str(v[0]) for v in inputs.values() if is_link(v))
    return seen


def execution_order(graph: dict[str, Any], outputs: Sequence[str]) -> list[str]:
    """Dependencies first, outputs in the order given (validation has ruled out cycles)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(nid: str) -> None:
        if nid in seen:
            return
        seen.add(nid)
        for v in node_inputs(graph[nid]).values():
            # A node no output depends on is not validated: its links may name nothing.
            if is_link(v) and str(v[0]) in graph:
                visit(str(v[0]))
        order.append(nid)

    for out in outputs:
        visit(out)
    return order


def cache_keys(graph: dict[str, Any], order: Sequence[str], input_hashes: dict[str, str]) -> dict[str, str]:
    """
    A cache key per node: its class and inputs, with links replaced by the linked node's key.

    A link to a node that is not there (or not keyed yet: a cycle among nodes no output depends on) gets a key
    that matches nothing, as ComfyUI's NaN signature of a missing node never equals anything.
    """
    sigs: dict[str, str] = {}
    for nid in order:
        node = graph[nid]
        parts: dict[str, Any] = {}
        for k, v in node_inputs(node).items():
            if is_link(v):
                linked = sigs.get(str(v[0])) or f"missing-{uuid.uuid4().hex}"
                parts[k] = ["link", linked, v[1]]
            else:
                parts[k] = v
        if node["class_type"] == "LoadImage":
            # Like ComfyUI's IS_CHANGED: a re-uploaded file with new bytes is not served from the cache.
            parts["__file"] = input_hashes.get(str(parts.get("image")), "")
        text = json.dumps([node["class_type"], parts], sort_keys=True, default=str)
        sigs[nid] = hashlib.sha1(text.encode()).hexdigest()
    return sigs
