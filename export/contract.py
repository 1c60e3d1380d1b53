"""The 16-bit contract: checked on F's Brevitas modules and again on the exported QONNX graph.

First conv and last FC keep 16-bit weights (the input image and the logits need the range); every other
weight and every activation uses the configured low bit width; weights are signed and narrow-range (the
only kind FINN's RTL MVAU takes on DSP48E1); no bias, no zero point, and a per-tensor scale where the
output scale is formed. Checking the graph too proves that the file FINN compiles says the same.
"""

from __future__ import annotations

from agq.export.layers import QuantLayer
from agq.training.config import FIRST_LAST_WEIGHT_BITS, ModelConfig
from onnx import NodeProto
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp


def expected_bits(layers: list[QuantLayer], cfg: ModelConfig) -> list[int]:
    """The bit width the contract demands of each layer, in trace order."""
    weights = [layer for layer in layers if layer.is_weight]
    ends = {id(weights[0]), id(weights[-1])} if weights else set()
    return [
        FIRST_LAST_WEIGHT_BITS if id(layer) in ends
        else cfg.weight_bits if layer.is_weight
        else cfg.act_bits
        for layer in layers
    ]


def contract_violations(layers: list[QuantLayer], cfg: ModelConfig) -> list[str]:
    """Every breach of the contract by F's modules, one message per problem, naming the layer."""
    problems = []
    weights = [layer for layer in layers if layer.is_weight]
    if not weights:
        return ["model has no quantized weight layer"]
    for layer, bits in zip(layers, expected_bits(layers, cfg), strict=True):
        what = "weights" if layer.is_weight else "activations"
        if layer.bits != bits:
            role = {id(weights[0]): " (first layer)", id(weights[-1]): " (last layer)"}.get(id(layer), "")
            problems.append(f"{layer.name}{role}: {what} are {layer.bits}-bit, the contract needs {bits}-bit")
        if layer.zero_point != 0:
            problems.append(f"{layer.name}: {what} have a non-zero zero point")
        if layer.input_quant:
            problems.append(f"{layer.name}: has an input quantizer; feed the raw uint8 image instead")
        if layer.is_weight:
            if not layer.narrow_range:
                problems.append(f"{layer.name}: weights are full-range; FINN's RTL MVAU needs narrow range")
            if not layer.signed:
                problems.append(f"{layer.name}: weights are unsigned; the contract needs signed weights")
            if layer.has_bias:
                problems.append(f"{layer.name}: has a bias; the contract allows none (BN carries the offset)")
        elif layer.signed:
            problems.append(f"{layer.name}: activations are signed; the contract needs unsigned (ReLU) ones")
    return problems


def _graph_quant_attrs(model: ModelWrapper, node: NodeProto) -> tuple[int, bool, bool]:
    op = getCustomOp(node)
    bits = model.get_initializer(node.input[3])
    n_bits = int(bits.item()) if bits is not None and bits.size == 1 else -1
    return n_bits, bool(op.get_nodeattr("signed")), bool(op.get_nodeattr("narrow"))


def graph_contract_violations(
    model: ModelWrapper, pairs: list[tuple[QuantLayer, NodeProto, NodeProto | None]], cfg: ModelConfig
) -> list[str]:
    """Breaches in the exported graph: each Quant node must carry its layer's contracted bit width."""
    problems = []
    for (layer, quant, _), bits in zip(pairs, expected_bits([p[0] for p in pairs], cfg), strict=True):
        g_bits, g_signed, g_narrow = _graph_quant_attrs(model, quant)
        if g_bits != bits:
            problems.append(f"{quant.name} ({layer.name}) in the QONNX graph is {g_bits}-bit, the contract "
                            f"needs {bits}-bit")
        if layer.is_weight and not (g_signed and g_narrow):
            problems.append(f"{quant.name} ({layer.name}) in the QONNX graph is not signed narrow-range")
    return problems
