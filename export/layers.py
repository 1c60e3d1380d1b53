"""What F really quantizes, read from its Brevitas modules, and which QONNX node holds each quantizer.

The contract check, the model card and the equality check all need the same two lists: the quantizing
modules of F in the order the forward pass calls them, and the Quant nodes of the exported graph in the
same order. Both are built here once, so that the three users cannot disagree about which node is which
layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from brevitas.nn.quant_layer import QuantNonLinearActLayer, QuantWeightBiasInputOutputLayer
from onnx import NodeProto
from qonnx.core.modelwrapper import ModelWrapper
from torch import nn

from agq.errors import AgqError

Kind = Literal["conv", "fc", "act"]


@dataclass(frozen=True)
class QuantLayer:
    """One quantizing module of F: a weight layer (its weight quantizer) or an activation quantizer."""

    name: str
    kind: Kind
    bits: int
    signed: bool
    narrow_range: bool
    per_tensor: bool
    zero_point: float
    has_bias: bool
    input_quant: bool
    module: nn.Module = field(repr=False, compare=False)

    @property
    def is_weight(self) -> bool:
        return self.kind != "act"

    def scale(self) -> torch.Tensor:
        """The quantizer's scale as Brevitas computes it (per tensor or per output channel)."""
        proxy = self.module.weight_quant if self.is_weight else self.module.act_quant
        return proxy.scale().detach()


def _describe(name: str, module: nn.Module) -> QuantLayer:
    if isinstance(module, QuantWeightBiasInputOutputLayer):
        proxy = module.weight_quant
        kind: Kind = "fc" if isinstance(module, nn.Linear) else "conv"
        has_bias = module.bias is not None
    else:
        proxy = module.act_quant
        kind, has_bias = "act", False
    return QuantLayer(
        name=name,
        kind=kind,
        bits=int(proxy.bit_width()),
        signed=bool(proxy.is_signed),
        narrow_range=bool(proxy.is_narrow_range),
        per_tensor=proxy.scale().numel() == 1,
        zero_point=float(proxy.zero_point().abs().max()),
        has_bias=has_bias,
        input_quant=bool(module.input_quant.is_quant_enabled),
        module=module,
    )


def trace_quant_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[QuantLayer]:
    """F's quantizing modules in the order one forward pass calls them (registration order may differ)."""
    named = {
        module: name for name, module in model.named_modules()
        if isinstance(module, QuantWeightBiasInputOutputLayer | QuantNonLinearActLayer)
    }
    called: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, _i, _o: called.append(m)) for m in named]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    order = list(dict.fromkeys(called))
    return [_describe(named[m], m) for m in order]


def output_scale(layers: list[QuantLayer]) -> float:
    """The per-tensor factor from integer logits to F's logits: last activation scale x FC weight scale."""
    if len(layers) < 2 or layers[-1].kind != "fc" or layers[-2].kind != "act":
        raise AgqError("model does not end in an activation quantizer followed by the FC layer: "
                       "no per-tensor output scale")
    act, fc = layers[-2], layers[-1]
    for layer in (act, fc):
        if not layer.per_tensor:
            raise AgqError(f"{layer.name}: scale is not per-tensor, so the logits have no one output scale")
    return float(act.scale().item()) * float(fc.scale().item())


def graph_quant_nodes(model: ModelWrapper) -> list[tuple[Kind, NodeProto, NodeProto | None]]:
    """The Quant nodes of a QONNX graph in forward order: ``(kind, quant node, consumer)``.

    A weight quantizer is listed where its Conv/MatMul consumes it (qonnx cleanup puts all weight Quant
    nodes first), so the order matches :func:`trace_quant_layers`. The consumer is None for activations.
    """
    found: list[tuple[Kind, NodeProto, NodeProto | None]] = []
    for node in model.graph.node:
        if node.op_type == "Quant" and model.get_initializer(node.input[0]) is None:
            found.append(("act", node, None))
        elif node.op_type in ("Conv", "MatMul", "Gemm"):
            producer = model.find_producer(node.input[1])
            if producer is not None and producer.op_type == "Quant":
                found.append(("conv" if node.op_type == "Conv" else "fc", producer, node))
    return found


def pair_layers(
    layers: list[QuantLayer], model: ModelWrapper
) -> list[tuple[QuantLayer, NodeProto, NodeProto | None]]:
    """Each traced layer with its Quant node (and consumer); a graph that does not mirror F is an error."""
    nodes = graph_quant_nodes(model)
    kinds = [layer.kind for layer in layers]
    if kinds != [kind for kind, _, _ in nodes]:
        raise AgqError(f"exported graph does not mirror the model: quantizers {kinds} in PyTorch, "
                       f"{[kind for kind, _, _ in nodes]} in QONNX")
    return [(layer, quant, consumer) for layer, (_, quant, consumer) in zip(layers, nodes, strict=True)]
