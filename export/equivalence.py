"""Equality of the exported QONNX model with F in PyTorch, image by image, with the cause of any difference.

Both run in float32 on the same raw images. Equal means: the same top-1, the same integer logits (the
last layer's integer accumulators, which the hardware computes) and the same rounded logits
(logits / output scale, rounded). The executor is qonnx's own (``execute_onnx``), batched by
``ChangeBatchSize``. A difference is traced to its first differing quantized activation, comparing the
PyTorch values (captured by :mod:`export.reference`, which ``hw.rtlsim`` shares) with the QONNX
execution context. It is a *float tie* by export.reference's one rule: codes one step apart, with both
pre-quantization values on the rounding threshold up to float noise (FINN-NOTES.md, "Equivalence
pitfalls"). Equal integer logits with different round(logit / scale) are float32 error of
the last layer's float accumulation (logits reach ~1.4e6 x scale on MNIST), also reported as a tie.
Anything else is an error. The exported quantized weights are compared with Brevitas' exactly, so that
a weight altered in the file is named even where no image exposes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from agq.export.layers import QuantLayer, pair_layers
from agq.export.reference import (
    TIE_TOLERANCE_STEPS,
    capture,
    exact_logits,
    float_ties,
    last_layer,
    rounding_threshold,
)
from onnx import NodeProto
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes
from torch import nn

from agq.progress import bar

# Differing images a command prints; the rest are in model.json ("equivalence.differences").
SHOWN_DIFFERENCES = 3
# |logit / scale - integer logit| beyond this fraction of sum |a_i w_i| means the output scale is wrong:
# float32 accumulation errs by about sqrt(n) x 6e-8 of that sum.
MAX_SCALE_ERROR = 1e-4


def first_lines(lines: list[str], rest_in: str, limit: int = SHOWN_DIFFERENCES) -> list[str]:
    """What a command prints of a long list: the first ``limit`` lines and where the others are."""
    rest = len(lines) - limit
    return lines[:limit] + ([f"... and {rest} more ({rest_in})"] if rest > 0 else [])


@dataclass(frozen=True)
class ImageDifference:
    """One image on which PyTorch and the QONNX model disagree, with the diagnosed cause."""

    index: int
    torch_top1: int
    onnx_top1: int
    logits_differing: int
    tie: bool
    cause: str

    def __str__(self) -> str:
        verdict = "float tie" if self.tie else "ERROR"
        return (f"image {self.index}: top-1 {self.torch_top1} (PyTorch) vs {self.onnx_top1} (QONNX), "
                f"{self.logits_differing} integer logits differ; {verdict}: {self.cause}")


@dataclass
class EquivalenceReport:
    """Counts over the checked images plus every difference; ``ok`` when only float ties remain."""

    images: int
    output_scale: float
    top1_equal: int = 0
    int_logits_equal: int = 0
    rounded_logits_equal: int = 0
    onnx_top1_correct: int = 0
    max_rounding_residual: float = 0.0
    max_scale_error: float = 0.0
    differences: list[ImageDifference] = field(default_factory=list)
    weight_mismatches: list[str] = field(default_factory=list)

    @property
    def ties(self) -> list[ImageDifference]:
        return [d for d in self.differences if d.tie]

    @property
    def errors(self) -> list[str]:
        problems = list(self.weight_mismatches)
        if self.max_scale_error > MAX_SCALE_ERROR:
            problems.append(f"logits are not output scale {self.output_scale:.9g} x integer logits (error up "
                            f"to {self.max_scale_error:.3g} of the accumulated magnitude)")
        return problems + [str(d) for d in self.differences if not d.tie]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One line: the counts and, when it failed, the first problem."""
        n = self.images
        line = (f"{self.top1_equal}/{n} top-1 equal, {self.int_logits_equal}/{n} integer logits equal, "
                f"{self.rounded_logits_equal}/{n} rounded logits equal, {len(self.ties)} float ties")
        errors = self.errors
        if errors:
            line += f"; {len(errors)} errors, first: {errors[0]}"
        return line

    def problems(self) -> list[str]:
        """Every problem, errors before float ties."""
        return [*self.errors, *map(str, self.ties)]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["differences"] = [str(d) for d in self.differences]
        out["ties"] = len(self.ties)
        out["tie_tolerance_steps"] = TIE_TOLERANCE_STEPS
        return out


class _BatchedQonnx:
    """qonnx's executor on a copy of the model whose batch size is ``batch``; short batches are padded."""

    def __init__(self, model: ModelWrapper, batch: int) -> None:
        self.batch = batch
        self.model = model.transform(ChangeBatchSize(batch)).transform(InferShapes())
        self.input = self.model.graph.input[0].name
        self.output = self.model.graph.output[0].name

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        padded = np.zeros((self.batch, *x.shape[1:]), dtype=np.float32)
        padded[: len(x)] = x
        return execute_onnx(self.model, {self.input: padded}, return_full_exec_context=True)


def _weight_mismatches(
    pairs: list[tuple[QuantLayer, NodeProto, NodeProto | None]], context: dict[str, np.ndarray]
) -> list[str]:
    problems = []
    for layer, quant, consumer in pairs:
        if not layer.is_weight:
            continue
        exported = context[quant.output[0]]
        if consumer is not None and consumer.op_type == "MatMul":
            exported = exported.T  # MatMul holds the FC weight as (in, out); PyTorch as (out, in)
        reference = layer.module.quant_weight().value.detach().numpy()
        if exported.shape != reference.shape or not np.array_equal(exported, reference):
            wrong = int((exported != reference).sum()) if exported.shape == reference.shape else exported.size
            problems.append(f"{layer.name} ({quant.name}): {wrong} of {reference.size} quantized weights "
                            f"in the QONNX graph differ from PyTorch's")
    return problems


def _locate(index: tuple[int, ...]) -> str:
    return "[" + ",".join(str(i) for i in index) + "]"


def _diagnose_activation(
    layer: QuantLayer, quant: NodeProto, scale: np.ndarray, pt: tuple[np.ndarray, np.ndarray],
    onnx: tuple[np.ndarray, np.ndarray],
) -> tuple[bool, str] | None:
    """(is a tie, cause) for the first quantized activation where the two runs differ, else None."""
    (pt_pre, pt_out), (on_pre, on_out) = pt, onnx
    pt_code, on_code = np.round(pt_out / scale), np.round(on_out / scale)
    differing = np.argwhere(pt_code != on_code)
    if len(differing) == 0:
        return None
    tie = float_ties(pt_code, on_code, (pt_pre, on_pre), scale)
    non_tie = [tuple(i) for i in differing if not tie[tuple(i)]]
    where = f"{layer.name} ({quant.name})"
    count = f"{len(differing)} element(s) differ"
    i = non_tie[0] if non_tie else tuple(differing[0])
    a, b, s = float(pt_pre[i]), float(on_pre[i]), float(np.broadcast_to(scale, pt_pre.shape)[i])
    if not non_tie:
        threshold = float(rounding_threshold(pt_code[i], on_code[i], s))
        ulps = abs(a - b) / float(np.spacing(np.float32(threshold)))
        return True, (f"{where} at {_locate(i[1:])}: pre-quantization value {a:.9g} in PyTorch vs {b:.9g} in "
                      f"QONNX ({ulps:.0f} float32 steps apart), rounding threshold {threshold:.9g} "
                      f"(scale {s:.9g}); {count}")
    return False, (f"{where} at {_locate(i[1:])}: quantized code {pt_code[i]:.0f} in PyTorch vs "
                   f"{on_code[i]:.0f} in QONNX, pre-quantization values {a:.9g} vs {b:.9g} "
                   f"({abs(a - b) / s:.3g} quantization steps apart); {count}")


def _int_weight(
    qmodel: ModelWrapper, quant: NodeProto, consumer: NodeProto, context: dict[str, np.ndarray]
) -> np.ndarray:
    """The last layer's integer weights as exported, (out, in) like PyTorch's."""
    weight = np.round(context[quant.output[0]] / qmodel.get_initializer(quant.input[1])).astype(np.int64)
    return weight.T if consumer.op_type == "MatMul" else weight


def _diagnose_logits(
    pt: np.ndarray, on: np.ndarray, pt_exact: np.ndarray, on_exact: np.ndarray
) -> tuple[bool, str]:
    """Cause of a difference when every quantized activation agrees: only the last layer remains."""
    if not np.array_equal(pt_exact, on_exact):
        k = int(np.flatnonzero(pt_exact != on_exact)[0])
        return False, (f"every quantized activation is equal, but integer logit {k} is {pt_exact[k]} in "
                       f"PyTorch vs {on_exact[k]} in QONNX: the last layer differs")
    rounded_pt, rounded_on = np.round(pt), np.round(on)
    if not np.array_equal(rounded_pt, rounded_on):
        # Same integer inputs and weights: only the float32 accumulation of the last layer differs.
        k = int(np.flatnonzero(rounded_pt != rounded_on)[0])
        return True, (f"float32 error of the last layer at round(logit / scale): logit {k} / scale is "
                      f"{pt[k]:.9g} in PyTorch vs {on[k]:.9g} in QONNX; the exact integer logit "
                      f"{pt_exact[k]} is the same in both")
    top = np.flatnonzero(pt_exact == pt_exact.max()).tolist()
    return True, f"argmax tie: classes {top} share the top integer logit {pt_exact.max()}"


def check_equivalence(
    model: nn.Module, layers: list[QuantLayer], qmodel: ModelWrapper, images: np.ndarray,
    labels: np.ndarray, scale: float, batch: int = 64, progress: bool = False,
) -> EquivalenceReport:
    """Run F and the QONNX model on ``images`` (raw uint8, N x C x H x W) and compare them image by image."""
    pairs = pair_layers(layers, qmodel)
    acts = [(layer, quant) for layer, quant, _ in pairs if not layer.is_weight]
    fc, fc_quant, fc_node = pairs[-1]
    act_scale, pt_weight = last_layer(layers)
    watched = [layer.module for layer, _ in acts]
    on_act_scale = float(qmodel.get_initializer(acts[-1][1].input[1]))
    runner = _BatchedQonnx(qmodel, min(batch, len(images)))
    report = EquivalenceReport(images=len(images), output_scale=scale)
    starts = range(0, len(images), runner.batch)
    for start in bar(starts, desc="equality check", unit="batch", enabled=progress):
        x = images[start : start + runner.batch].astype(np.float32)
        n = len(x)
        pt_logits, seen = capture(model, [*watched, fc.module], x)
        pt_fc_in, pt_acts = seen[fc.module][0], [seen[module] for module in watched]
        context = runner.run(x)
        if start == 0:  # the exported weights are the same in every batch: read them once
            report.weight_mismatches = _weight_mismatches(pairs, context)
            on_weight = _int_weight(qmodel, fc_quant, fc_node, context)
        on_logits = context[runner.output][:n]
        pt_exact, pt_magnitude = exact_logits(pt_fc_in, act_scale, pt_weight)
        on_exact, on_magnitude = exact_logits(context[fc_node.input[0]][:n], on_act_scale, on_weight)
        pt_units, on_units = pt_logits.astype(np.float64) / scale, on_logits.astype(np.float64) / scale
        runs = ((pt_units, pt_exact, pt_magnitude), (on_units, on_exact, on_magnitude))
        for units, exact, magnitude in runs:
            deviation = np.abs(units - exact)
            report.max_rounding_residual = max(report.max_rounding_residual, float(deviation.max()))
            relative = deviation / np.maximum(1, magnitude)
            report.max_scale_error = max(report.max_scale_error, float(relative.max()))
        pt_top1, on_top1 = pt_logits.argmax(1), on_logits.argmax(1)
        same_exact = (pt_exact == on_exact).all(1)
        same_rounded = (np.round(pt_units) == np.round(on_units)).all(1)
        report.top1_equal += int((pt_top1 == on_top1).sum())
        report.int_logits_equal += int(same_exact.sum())
        report.rounded_logits_equal += int(same_rounded.sum())
        report.onnx_top1_correct += int((on_top1 == labels[start : start + n]).sum())
        for i in np.flatnonzero(~same_exact | ~same_rounded | (pt_top1 != on_top1)):
            cause = None
            for (layer, quant), (pt_pre, pt_out) in zip(acts, pt_acts, strict=True):
                onnx = (context[quant.input[0]][i : i + 1], context[quant.output[0]][i : i + 1])
                cause = _diagnose_activation(layer, quant, qmodel.get_initializer(quant.input[1]),
                                             (pt_pre[i : i + 1], pt_out[i : i + 1]), onnx)
                if cause is not None:
                    break
            tie, text = cause or _diagnose_logits(pt_units[i], on_units[i], pt_exact[i], on_exact[i])
            report.differences.append(ImageDifference(
                index=start + int(i), torch_top1=int(pt_top1[i]), onnx_top1=int(on_top1[i]),
                logits_differing=int((pt_exact[i] != on_exact[i]).sum()), tie=tie, cause=text,
            ))
    return report
