"""The two references the RTL simulation is held against, and the diagnosis of a PyTorch difference.

* FINN's Python execution of the very partition that was simulated: every node in FINN's Python mode
  (``cppsim`` selects the Python model for RTL nodes), run node by node with qonnx's ``execute_node``.
  qonnx's ``execute_onnx`` is not called per image: it re-checks the graph's shapes and topological
  order on every call (2/3 of the time on a 101-node partition) and rounds values that should be
  integers (quant-tensor sanitizing), which would hide exactly the errors this comparison looks for.
  Both checks are made once per model here. The outputs are cached per partition and image
  (:mod:`hw.rtlsim.reference_cache`).
* PyTorch's integer logits: F's last-layer integer accumulators, exact in int64
  (:func:`export.reference.torch_logits`). ``round(logits / scale)`` in float32 is reported too, but
  cannot be the reference (see export.reference).

A difference from PyTorch is traced to the first quantized activation whose code differs between
PyTorch and the hardware path (FINN's Thresholding outputs); whether it is a float tie is decided by
export.reference's rule, with PyTorch's pre-quantization value (the hardware has none).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
from agq.export.layers import QuantLayer
from agq.export.reference import capture, float_ties, rounding_threshold
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_node, execute_onnx
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_preferred_qonnx_opset, qonnx_make_model
from torch import nn

from agq.errors import AgqError

SDP = "StreamingDataflowPartition"


def partition_inputs(parent_path: Path, images: np.ndarray) -> np.ndarray:
    """The partition's input for every image: the parent's host nodes before the partition, batched."""
    parent = ModelWrapper(str(parent_path))
    nodes = list(parent.graph.node)
    sdp = [i for i, n in enumerate(nodes) if n.op_type == SDP]
    if len(sdp) != 1:
        raise AgqError(f"{parent_path} has {len(sdp)} dataflow partitions; agq simulates exactly one")
    target = nodes[sdp[0]].input[0]
    x = images.astype(np.float32)
    if target == parent.graph.input[0].name:
        return x
    prefix = nodes[: sdp[0]]
    used = {t for n in prefix for t in n.input}
    graph = helper.make_graph(
        [copy.deepcopy(n) for n in prefix], "host_prefix", [copy.deepcopy(parent.graph.input[0])],
        [helper.make_tensor_value_info(target, 1, parent.get_tensor_shape(target))],
        initializer=[copy.deepcopy(i) for i in parent.graph.initializer if i.name in used],
    )
    prefix_model = ModelWrapper(qonnx_make_model(graph, opset_imports=parent.model.opset_import))
    prefix_model = prefix_model.transform(ChangeBatchSize(len(x))).transform(InferShapes())
    return execute_onnx(prefix_model, {prefix_model.graph.input[0].name: x})[target]


class FinnPython:
    """FINN's Python execution of the partition, one image at a time (FINN's nodes are batch-1)."""

    def __init__(self, partition: Path) -> None:
        from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode
        from qonnx.analysis.topology import nodes_topologically_sorted

        self.path = Path(partition)
        self.model = ModelWrapper(str(partition)).transform(SetExecMode("cppsim"))
        if not self.model.check_all_tensor_shapes_specified():
            raise AgqError(f"{partition} has tensors without a shape: run `agq build` again")
        if not self.model.analysis(nodes_topologically_sorted)["nodes_topologically_sorted"]:
            raise AgqError(f"{partition} is not topologically sorted: run `agq build` again")
        self.input = self.model.graph.input[0].name
        self.output = self.model.graph.output[0].name
        opsets = self.model.get_opset_imports()
        self._nodes = [(node, opsets.get(node.domain, get_preferred_qonnx_opset()))
                       for node in self.model.graph.node]
        self._empty = self.model.make_empty_exec_context()

    def context(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of the partition for one image (x with batch 1)."""
        context = dict(self._empty)  # initializers are shared, read-only; every other tensor is written
        context[self.input] = np.asarray(x, dtype=np.float32)
        for node, opset in self._nodes:
            execute_node(node, context, self.model.graph, opset, True)
        return context

    def outputs(self, inputs: np.ndarray, on_image: Callable[[], None] | None = None) -> np.ndarray:
        """Integer outputs (images, values per image); not-an-integer output is an AgqError."""
        rows = []
        for i in range(len(inputs)):
            out = self.context(inputs[i : i + 1])[self.output].reshape(-1)
            if not np.array_equal(out, np.round(out)):
                raise AgqError(f"FINN's Python execution of the partition gave non-integer outputs "
                               f"on image {i}")
            rows.append(out)
            if on_image:
                on_image()
        return np.asarray(rows).reshape(len(inputs), -1).astype(np.int64)


def _nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def explain_difference(
    model: nn.Module, layers: list[QuantLayer], finn: FinnPython, image: np.ndarray, x: np.ndarray
) -> tuple[bool, str]:
    """(is a float tie, the values that show it) for an image where FINN's partition and PyTorch differ.

    Called where the RTL equals FINN's Python execution, so FINN's intermediate tensors stand for the
    hardware's. ``image`` is the raw image (1, C, H, W), ``x`` the partition input for it. The k-th
    Thresholding node of the partition computes the k-th activation quantizer of F (agq's networks are
    chains).
    """
    acts = [layer for layer in layers if layer.kind == "act"]
    thresholds = [n for n in finn.model.graph.node if n.op_type.startswith("Thresholding")]
    if len(acts) != len(thresholds):
        return False, (f"cannot pair F's {len(acts)} activation quantizers with the partition's "
                       f"{len(thresholds)} Thresholding nodes")
    _, seen = capture(model, [a.module for a in acts], image)
    context = finn.context(x)
    for layer, node in zip(acts, thresholds, strict=True):
        scale = float(layer.scale().item())
        pre, out = (_nhwc(v) for v in seen[layer.module])
        pt_code = np.round(out / scale)
        hw_code = context[node.output[0]].reshape(pt_code.shape)
        differing = np.argwhere(pt_code != hw_code)
        if len(differing) == 0:
            continue
        tie = bool(float_ties(pt_code, hw_code, (pre,), scale)[pt_code != hw_code].all())
        i = tuple(differing[0])
        threshold = float(rounding_threshold(pt_code[i], hw_code[i], scale))
        steps = abs(float(pre[i]) - threshold) / float(np.spacing(np.float32(threshold)))
        where = "[" + ",".join(str(j) for j in i[1:]) + "]"
        return tie, (f"{layer.name} ({node.name}) at NHWC {where}: code {pt_code[i]:.0f} in PyTorch vs "
                     f"{hw_code[i]:.0f} in FINN's partition (= the RTL's output); PyTorch's value before "
                     f"rounding {float(pre[i]):.9g}, "
                     f"rounding threshold {threshold:.9g} ({steps:.0f} float32 steps apart, scale "
                     f"{scale:.9g}); {len(differing)} element(s) differ")
    return False, "every quantized activation of FINN's partition agrees with PyTorch: the last layer differs"
