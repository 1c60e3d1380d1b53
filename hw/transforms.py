"""Small qonnx Transformations that FINN's build steps lack for an all-RTL, integer-only partition."""

from __future__ import annotations

from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation

HW_DOMAIN = "finn.custom_op.fpgadataflow"
ELEMENTWISE_PREFIX = "Elementwise"


def is_hw_node(node) -> bool:  # noqa: ANN001 - an onnx NodeProto
    """A FINN hardware layer (before or after specialisation to _rtl/_hls)."""
    return node.domain.startswith(HW_DOMAIN)


class ReturnOutputScaleToHost(Transformation):
    """Guarantee: no float elementwise layer produces a graph output; it is a plain ONNX op again.

    FINN's step_convert_to_hw turns the final per-tensor logit scale (a float Mul by a constant) into
    an ElementwiseMul hardware layer, which has only a float HLS implementation on 7-series parts.
    FINN has a filter for exactly this case (InferElementwiseBinaryOperation.reject_output_dequant)
    but its build step does not use it, so this transformation undoes the conversion for the tail of
    the graph: the scale stays on the host, where it does not change the argmax, and the partition
    ends with the integer accumulators.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for index, node in enumerate(model.graph.node):
            if not (is_hw_node(node) and node.op_type.startswith(ELEMENTWISE_PREFIX)):
                continue
            if model.get_tensor_datatype(node.output[0]).is_integer() or not _feeds_host_only(model, node):
                continue
            host = helper.make_node(
                node.op_type[len(ELEMENTWISE_PREFIX):], list(node.input), list(node.output), name=node.name
            )
            model.graph.node.insert(index, host)
            model.graph.node.remove(node)
            return model, True  # its producer may now be a float tail layer as well
        return model, False


def _feeds_host_only(model: ModelWrapper, node) -> bool:  # noqa: ANN001 - an onnx NodeProto
    """True if nothing downstream of ``node`` is a hardware layer (it belongs to the graph's tail)."""
    successors = model.find_direct_successors(node) or []
    return all(not is_hw_node(s) and _feeds_host_only(model, s) for s in successors)


class PreferRTL(Transformation):
    """Ask SpecializeLayers for the RTL variant of every hardware layer (FINN falls back to HLS where
    it has none; the all-RTL check then names that layer)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if is_hw_node(node):
                getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
        return model, False
