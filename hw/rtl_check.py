"""The all-RTL check: every layer between the input and the output scale must become an RTL layer.

Two ways a layer fails to: FINN has no hardware layer for it at all (it stays a plain ONNX node
between hardware layers, and FINN's partitioning stops with a generic message), or SpecializeLayers
silently falls back to HLS because FINN has no RTL variant for it; HLS layers need Vitis HLS and cannot
be simulated with Verilator. This module names each such layer with the reason (for HLS, the same
conditions as finn.transformation.fpgadataflow.specialize_layers) and the model change that avoids it.
"""

from __future__ import annotations

import numpy as np
from agq.export.lint import POOLING_FIX, UNMAPPABLE
from agq.hw.transforms import is_hw_node
from finn.util.basic import get_dsp_block, get_dsp_datapath_limits
from finn.util.fpgadataflow import is_rtl_node
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from agq.errors import AgqError

POOLING_HW = {"GlobalAccPool", "Pool", "StreamingMaxPool"}  # FINN's (HLS-only) layers for UNMAPPABLE ops
# FINN layers with an HLS implementation only (on every part agq targets), by base op type
HLS_ONLY = {
    "GlobalAccPool": ("global pooling has only an HLS layer in FINN (GlobalAccPool)", POOLING_FIX),
    "Pool": ("pooling has only an HLS layer in FINN (Pool)", POOLING_FIX),
    "StreamingMaxPool": ("max-pooling has only an HLS layer in FINN (StreamingMaxPool)", POOLING_FIX),
    "LabelSelect": ("top-k has only an HLS layer in FINN (LabelSelect)", "take the argmax on the host"),
    "DuplicateStreams": ("a forked stream (skip connection) has only an HLS layer in FINN",
                         "use a plain network without skip connections"),
    "AddStreams": ("adding two streams (skip connection) has only an HLS layer in FINN",
                   "use a plain network without skip connections"),
}


def _base_op(op_type: str) -> str:
    return op_type.removesuffix("_hls").removesuffix("_rtl")


def _mvau_reason(model: ModelWrapper, node, part: str) -> tuple[str, str]:  # noqa: ANN001
    inst = getCustomOp(node)
    dsp = get_dsp_block(part)
    wdt, idt, odt = inst.get_input_datatype(1), inst.get_input_datatype(0), inst.get_output_datatype()
    weights = model.get_initializer(node.input[1])
    if inst.get_nodeattr("noActivation") == 0:
        return ("thresholds are embedded in the MVAU (RTL MVAU needs standalone thresholds)",
                "build with standalone_thresholds (agq always does: report this as a bug)")
    if not wdt.signed():
        return (f"weights are unsigned ({wdt.name}); the RTL MVAU takes signed weights",
                "quantize weights as signed narrow-range integers")
    if weights is not None and dsp == "DSP48E1" and np.min(weights) == wdt.min():
        return (f"weights are full-range {wdt.name} (they reach {wdt.min()}); the RTL MVAU on "
                f"{dsp} ({part}) needs narrow-range signed weights",
                f"quantize with narrow_range=True (e.g. {wdt.bitwidth()}-bit weights in "
                f"{wdt.min() + 1}..{wdt.max()}, ternary for 2 bit)")
    max_act, max_weight, max_acc = get_dsp_datapath_limits(dsp)
    if idt.bitwidth() < 2 or wdt.bitwidth() < 2:
        return (f"{idt.name} activations x {wdt.name} weights: the RTL MVAU needs at least 2 bits each",
                "use 2-bit or wider weights and activations")
    return (f"{idt.name} activations x {wdt.name} weights -> {odt.name} accumulator exceed the {dsp} "
            f"datapath ({max_act - 1} unsigned / {max_act} signed activation bits, {max_weight} weight "
            f"bits, {max_acc} accumulator bits)",
            "use narrower weights/activations or fewer inputs per neuron")


def hls_fallback(model: ModelWrapper, node, part: str) -> tuple[str, str]:  # noqa: ANN001
    """(reason, fix) for a partition layer that SpecializeLayers made HLS."""
    op = _base_op(node.op_type)
    if op == "MVAU":
        return _mvau_reason(model, node, part)
    if op == "VVAU":
        return ("depthwise convolution has an RTL layer only on Versal (DSP58) parts",
                "use dense convolutions")
    if op.startswith("Elementwise"):
        return (f"elementwise arithmetic ({op}) inside the partition has no RTL layer on {part}",
                "use a plain network without skip connections; keep scales on the host")
    if op in HLS_ONLY:
        return HLS_ONLY[op]
    return (f"FINN has no RTL implementation of {op} for {part}", "remove or replace this layer")


def non_rtl_layers(model: ModelWrapper, part: str) -> list[dict[str, str]]:
    """Every partition layer that is not RTL, with the reason and the fix (the build report's list)."""
    layers = []
    for node in model.graph.node:
        if not is_rtl_node(node):
            reason, fix = hls_fallback(model, node, part)
            layers.append({"name": node.name, "op_type": node.op_type, "reason": reason, "fix": fix})
    return layers


def require_all_rtl(model: ModelWrapper, part: str) -> None:
    """Raise AgqError naming every partition layer that is not RTL, with the reason and the fix."""
    problems = [f"{n['name']} ({n['op_type']}): {n['reason']}; fix: {n['fix']}"
                for n in non_rtl_layers(model, part)]
    if problems:
        raise AgqError("all-RTL check failed, layer(s) would fall back to HLS: " + " | ".join(problems))


def _reachable(model: ModelWrapper, starts: list, forward: bool) -> set[str]:
    """Names of the nodes reachable from ``starts`` (excluding the starts themselves)."""
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        node = todo.pop()
        nxt = model.find_direct_successors(node) if forward else model.find_direct_predecessors(node)
        for other in nxt or []:
            if other.name not in seen:
                seen.add(other.name)
                todo.append(other)
    return seen


def unmapped_reason(model: ModelWrapper, node) -> tuple[str, str]:  # noqa: ANN001
    """(reason, fix) for a node FINN could not turn into a hardware layer."""
    dtypes = [model.get_tensor_datatype(i) for i in node.input if model.get_initializer(i) is None]
    pools = [p.name for p in model.find_direct_predecessors(node) or [] if _base_op(p.op_type) in POOLING_HW]
    if node.op_type in UNMAPPABLE:
        return (f"pooling ({node.op_type}) has no RTL layer in FINN (only HLS GlobalAccPool/Pool, or none)",
                POOLING_FIX)
    if pools:
        return (f"the averaging scale after {pools[0]} has no hardware layer", POOLING_FIX)
    if any(dt == DataType["FLOAT32"] for dt in dtypes):
        return (f"its input is FLOAT32, not quantized, so FINN cannot map {node.op_type} to hardware",
                "quantize the input of this layer (a QuantReLU or QuantIdentity before it)")
    return (f"FINN has no hardware layer for {node.op_type}",
            "remove it, or keep it before the first or after the last quantized layer (host side)")


def require_mapped(model: ModelWrapper, allow_hls: bool = False) -> None:
    """Raise AgqError naming every plain ONNX node sitting between hardware layers, and, unless
    ``allow_hls``, every pooling layer (FINN has pooling only in HLS, so such a network can never be
    all-RTL)."""
    hw = [n for n in model.graph.node if is_hw_node(n)]
    between = _reachable(model, hw, forward=True) & _reachable(model, hw, forward=False)
    problems = []
    for node in model.graph.node:
        if is_hw_node(node) and _base_op(node.op_type) in POOLING_HW and not allow_hls:
            reason, fix = HLS_ONLY[_base_op(node.op_type)]
        elif node.name in between and not is_hw_node(node):
            reason, fix = unmapped_reason(model, node)
        else:
            continue
        problems.append(f"{node.name} ({node.op_type}): {reason}; fix: {fix}")
    if problems:
        raise AgqError("unsupported layer(s) for an all-RTL accelerator: " + " | ".join(problems))
