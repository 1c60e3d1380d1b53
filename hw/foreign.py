"""Models agq did not train: the raw-pixel input mapping and the checks that name what to change.

FINN's end-to-end examples (tfc/cnv notebooks) prepend the input preprocessing of a float-input model
(a division by 255, a small PyTorch module exported and joined with qonnx's MergeONNXModels), annotate
the new input UINT8 and let streamlining absorb the preprocessing into the thresholds of the model's
input quantizer. finn-plus 1.6.1 ships no such preprocessing module, and MergeONNXModels renames every
tensor of the model at random, so :class:`PrependInputMapping` inserts the Mul (and Add) by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from agq.hw.config import InputMapping
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from agq.errors import AgqError

# shape-only ops that may sit between the float input and the quantizer that reads it
SHAPE_OPS = {"Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"}
MAPPING_OPTION = "--input-scale/--input-offset (hw config input_scale/input_offset)"


class PrependInputMapping(Transformation):
    """Guarantee: the graph input is a UINT8 tensor of the old input's shape, and the old input is
    ``scale * input + offset`` computed by a Mul (and an Add unless offset is 0) in front of the graph."""

    def __init__(self, mapping: InputMapping) -> None:
        super().__init__()
        self.mapping = mapping

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        raw = graph.input[0].name
        mapped = model.make_new_valueinfo_name()
        shape = model.get_tensor_shape(raw)
        for node in graph.node:
            node.input[:] = [mapped if name == raw else name for name in node.input]
        steps = [("Mul", self.mapping.scale)]
        if self.mapping.offset:
            steps.append(("Add", self.mapping.offset))
        current, nodes = raw, []
        for k, (op, value) in enumerate(steps):
            const = model.make_new_valueinfo_name()
            model.set_initializer(const, np.asarray(value, dtype=np.float32))
            out = mapped if k == len(steps) - 1 else model.make_new_valueinfo_name()
            nodes.append(helper.make_node(op, [current, const], [out], name=f"agq_input_mapping_{op}"))
            model.set_tensor_shape(out, shape)
            current = out
        for node in reversed(nodes):
            graph.node.insert(0, node)
        model.set_tensor_datatype(raw, DataType["UINT8"])
        return model, False


def _quantizer_of_input(model: ModelWrapper) -> tuple[bool, str]:
    """(the float input reaches a Quant node through shape-only ops, the first other node met)."""
    todo = list(model.find_consumers(model.graph.input[0].name) or [])
    if not todo:
        return False, "nothing"
    for node in todo:
        while node.op_type in SHAPE_OPS:
            consumers = model.find_consumers(node.output[0]) or []
            if len(consumers) != 1:
                return False, f"{node.name} ({node.op_type})"
            node = consumers[0]
        if node.op_type not in {"Quant", "BipolarQuant"}:
            return False, f"{node.name or '(unnamed)'} ({node.op_type})"
    return True, ""


def prepare_input(model: ModelWrapper, path: Path, mapping: InputMapping | None) -> ModelWrapper:
    """The model with a UINT8 input: unchanged if it has one, else with ``mapping`` prepended.

    A float input without a mapping, a mapping for an integer input, and a float input whose first
    operation does not quantize it are AgqErrors naming the input, the option or the node.
    """
    name = model.graph.input[0].name
    dt = model.get_tensor_datatype(name)
    if dt.is_integer():
        if mapping is not None:
            raise AgqError(f"{path}: input {name!r} is already {dt.name}; drop {MAPPING_OPTION}")
        if dt != DataType["UINT8"]:
            raise AgqError(f"{path}: input {name!r} is {dt.name}; agq feeds raw uint8 pixels, annotate it "
                           "UINT8")
        return model
    if mapping is None:
        raise AgqError(f"{path}: input {name!r} is {dt.name}; state how raw uint8 pixels map to it with "
                       f"{MAPPING_OPTION}, e.g. --input-scale 1/255 for x/255")
    ok, node = _quantizer_of_input(model)
    if not ok:
        raise AgqError(f"{path}: the float input {name!r} goes into {node}, not into a quantizer; "
                       "quantize the input first (e.g. a Brevitas QuantIdentity as the first layer)")
    if get_by_name(model.graph.initializer, name) is not None:
        raise AgqError(f"{path}: input {name!r} is also an initializer; export the model without it")
    return model.transform(PrependInputMapping(mapping))
