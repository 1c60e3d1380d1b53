"""The two references the RTL simulation is held against, and the diagnosis of a PyTorch difference.

* FINN's Python execution of the very partition that was simulated: ``execute_onnx`` on
  partition_hdl.onnx with every node in FINN's Python mode (``cppsim`` selects the Python model for
  RTL nodes). qonnx's quant-tensor sanitizing is switched off for it: it silently rounds values that
  should be integers, which would hide exactly the errors this comparison looks for (and costs 2/3 of
  the run time).
* PyTorch's integer logits: F's last-layer integer accumulators, exact in int64
  (``export.equivalence.integer_logits``). ``round(logits / scale)`` in
  float32 is reported too, but cannot be the reference: accumulators reach 2^20 and more, where the
  float32 logit is off by a sizeable fraction of one (export/equivalence.py measured 0.55).

A difference from PyTorch is traced to the first quantized activation whose code differs between
PyTorch and the hardware path (FINN's Thresholding outputs); it is a float tie when PyTorch's
pre-quantization value lies within float noise of the rounding threshold (FINN-NOTES.md, "Equivalence
pitfalls"), and an error otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from agq.export.equivalence import TIE_TOLERANCE_STEPS, integer_logits
from agq.export.layers import QuantLayer
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model
from torch import nn

from agq.errors import AgqError

SDP = "StreamingDataflowPartition"


@contextlib.contextmanager
def _no_sanitizing() -> Iterator[None]:
    old = os.environ.get("SANITIZE_QUANT_TENSORS")
    os.environ["SANITIZE_QUANT_TENSORS"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SANITIZE_QUANT_TENSORS"]
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = old


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

        self.model = ModelWrapper(str(partition)).transform(SetExecMode("cppsim"))
        self.input = self.model.graph.input[0].name
        self.output = self.model.graph.output[0].name

    def context(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every tensor of the partition for one image (x with batch 1)."""
        with _no_sanitizing():
            return execute_onnx(self.model, {self.input: x}, return_full_exec_context=True)

    def outputs(self, inputs: np.ndarray, on_image: Callable[[], None] | None = None) -> np.ndarray:
        """Integer outputs (images, values per image); not-an-integer output is an AgqError."""
        rows = []
        with _no_sanitizing():
            for i in range(len(inputs)):
                out = execute_onnx(self.model, {self.input: inputs[i : i + 1]})[self.output].reshape(-1)
                if not np.array_equal(out, np.round(out)):
                    raise AgqError(f"FINN's Python execution of the partition gave non-integer outputs "
                                   f"on image {i}")
                rows.append(out)
                if on_image:
                    on_image()
        return np.asarray(rows).astype(np.int64)


def _capture(
    model: nn.Module, modules: list[nn.Module], x: np.ndarray
) -> tuple[np.ndarray, dict[nn.Module, tuple[np.ndarray, np.ndarray]]]:
    """F's float logits and, per module, (input after ReLU, output) of one forward pass."""
    seen: dict[nn.Module, tuple[np.ndarray, np.ndarray]] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen[module] = (torch.relu(inputs[0]).numpy(), output.numpy())

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(x.astype(np.float32))).numpy()
    finally:
        for handle in handles:
            handle.remove()
    return logits, seen


def torch_logits(model: nn.Module, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(exact integer logits as int64, float32 logits) of F on raw images, batched to bound memory.

    The integer logits are export.equivalence's; the float logits take a second forward pass (a few
    seconds on 10,000 MNIST images, while the simulator runs), which keeps one integer-logit definition.
    """
    exact, floats = [], []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        exact.append(integer_logits(model, x))
        floats.append(_capture(model, [], x)[0])
    return np.concatenate(exact), np.concatenate(floats)


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
    _, seen = _capture(model, [a.module for a in acts], image)
    context = finn.context(x)
    for layer, node in zip(acts, thresholds, strict=True):
        scale = float(layer.scale().item())
        pre, out = (_nhwc(v) for v in seen[layer.module])
        pt_code = np.round(out / scale)
        hw_code = context[node.output[0]].reshape(pt_code.shape)
        differing = np.argwhere(pt_code != hw_code)
        if len(differing) == 0:
            continue
        near = np.abs(pre - (np.minimum(pt_code, hw_code) + 0.5) * scale) <= TIE_TOLERANCE_STEPS * scale
        tie = bool(all(abs(pt_code[tuple(i)] - hw_code[tuple(i)]) == 1 and near[tuple(i)] for i in differing))
        i = tuple(differing[0])
        threshold = (min(pt_code[i], hw_code[i]) + 0.5) * scale
        steps = abs(float(pre[i]) - threshold) / float(np.spacing(np.float32(threshold)))
        where = "[" + ",".join(str(j) for j in i[1:]) + "]"
        return tie, (f"{layer.name} ({node.name}) at NHWC {where}: code {pt_code[i]:.0f} in PyTorch vs "
                     f"{hw_code[i]:.0f} in FINN's partition (= the RTL's output); PyTorch's value before "
                     f"rounding {float(pre[i]):.9g}, "
                     f"rounding threshold {threshold:.9g} ({steps:.0f} float32 steps apart, scale "
                     f"{scale:.9g}); {len(differing)} element(s) differ")
    return False, "every quantized activation of FINN's partition agrees with PyTorch: the last layer differs"
