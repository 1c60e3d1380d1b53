"""Deployability lint: graph patterns that FINN cannot turn into RTL on the default target (Pynq-Z2).

The rules are the measured facts of /work/shared/FINN-NOTES.md: pooling and global pooling fall back to
HLS or fail to convert, full-range low-bit weights have no RTL MVAU on DSP48E1, an input quantizer becomes
a float-input Thresholding, a bias or a residual Add leaves a float adder in the partition. On the default
target every finding is an error: agq's promise is an all-RTL, integer-only partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx import NodeProto
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

# What agq's plain networks export to and FINN was seen to map to all-RTL layers on the target.
VERIFIED_OPS = {"Quant", "Conv", "BatchNormalization", "Relu", "Flatten", "Reshape", "MatMul"}

# The one list of the ONNX ops FINN cannot map to RTL (hw/rtl_check.py names them again after the build's
# conversion): pooling becomes HLS-only Pool/StreamingMaxPool or nothing, global pooling HLS-only
# GlobalAccPool (the MaxPoolNHWC and QuantAvgPool2d forms are what FINN's own QONNX conversion makes).
POOLING = {"MaxPool", "AveragePool", "MaxPoolNHWC", "QuantAvgPool2d"}
GLOBAL_POOLING = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"}
UNMAPPABLE = POOLING | GLOBAL_POOLING
POOLING_FIX = ("replace pooling by a strided convolution (model.strides) and end with flatten + a "
               "fully-connected layer")
NO_BIAS = "bias=False; BatchNorm carries the offset"


@dataclass(frozen=True)
class Finding:
    """One layer FINN cannot turn into RTL on the target, and how to change the model."""

    node: str
    op: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.problem}; fix: {self.fix}"


def _node_finding(model: ModelWrapper, node: NodeProto, graph_input: str) -> Finding | None:
    def found(problem: str, fix: str) -> Finding:
        return Finding(node.name, node.op_type, problem, fix)

    op = node.op_type
    if op in POOLING:
        return found("pooling has no RTL mapping in agq's FINN flow", POOLING_FIX)
    if op in GLOBAL_POOLING:
        return found("global pooling becomes GlobalAccPool, which is HLS-only", POOLING_FIX)
    if op in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
        return found("layer has a bias (a float adder in the partition)", NO_BIAS)
    if op == "Add":
        if any(model.get_initializer(name) is not None for name in node.input):
            return found("bias Add (a float adder in the partition)", NO_BIAS)
        return found("residual Add (a float adder in the partition)",
                     "use the plain architecture (model.arch=plain)")
    if op == "Quant":
        if node.input[0] == graph_input:
            return found("input quantizer becomes a float-input Thresholding with 2^k-1 thresholds",
                         "remove it and feed the raw uint8 image (input annotated UINT8)")
        if model.get_initializer(node.input[0]) is not None and not getCustomOp(node).get_nodeattr("narrow"):
            return found("full-range weights have no RTL MVAU on DSP48E1 (HLS fallback)",
                         "quantize weights narrow-range (training/quant.py)")
        return None
    if op not in VERIFIED_OPS:
        return found("op is not among those agq's FINN flow maps to RTL",
                     "express the layer with conv/BN/ReLU/FC")
    return None


def lint_graph(model: ModelWrapper) -> list[Finding]:
    """Every deployability problem of a cleaned QONNX graph, in graph order."""
    graph_input = model.graph.input[0].name
    findings = [f for node in model.graph.node if (f := _node_finding(model, node, graph_input)) is not None]
    if model.get_tensor_datatype(graph_input) != DataType["UINT8"]:
        findings.append(Finding(graph_input, "input", "input is not annotated UINT8",
                                "annotate the raw-image input UINT8 (export/qonnx.py does)"))
    return findings
