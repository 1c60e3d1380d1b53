"""Checkpoint -> model.onnx (QONNX) + model.json, refusing anything FINN cannot compile or that is not F.

Brevitas' TorchScript QONNX exporter is used, not the dynamo default: it returns one self-contained
ModelProto (dynamo writes the weights to a separate ``.onnx.data``) and is byte-reproducible for the same
weights. qonnx's cleanup, shape and datatype inference follow, and the input is annotated UINT8 (the raw
image: FINN then needs no input quantizer). Nothing is written unless the 16-bit contract, the
deployability lint and the equality check on real test images all pass; then model.onnx and model.json
are committed together (agq.io.commit_files: a crash leaves the old pair or the new pair), the card
recording the model's sha256 and the checkpoint's, which every reader checks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from agq.export.contract import contract_violations, graph_contract_violations
from agq.export.equivalence import EquivalenceReport, check_equivalence
from agq.export.layers import output_scale, pair_layers, trace_quant_layers
from agq.export.lint import lint_graph
from agq.export.model_card import MODEL_CARD, MODEL_ONNX, model_card
from agq.training.checkpoint import load_deployable
from agq.training.data import test_images
from brevitas.export import export_qonnx
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model

from agq.errors import AgqError
from agq.io import bytes_sha256, check_writable, commit_files, file_sha256


class EquivalenceError(AgqError):
    """The exported model is not F: carries the full image-by-image report for the CLI to print."""

    def __init__(self, report: EquivalenceReport) -> None:
        super().__init__(f"exported model differs from PyTorch: {report.summary()}")
        self.report = report


def to_qonnx(model: torch.nn.Module, input_shape: tuple[int, ...]) -> ModelWrapper:
    """F as a cleaned QONNX graph with a UINT8 input of ``input_shape`` and inferred shapes and datatypes."""
    proto = export_qonnx(model, torch.zeros(input_shape), dynamo=False)
    qmodel = cleanup_model(ModelWrapper(proto))
    qmodel.set_tensor_datatype(qmodel.graph.input[0].name, DataType["UINT8"])
    return qmodel.transform(InferShapes()).transform(InferDataTypes())


def _refuse(checkpoint: Path, problems: list[str]) -> None:
    if problems:
        raise AgqError(f"{checkpoint} is not deployable: " + "; ".join(problems))


def export_checkpoint(checkpoint: Path, out_dir: Path, n_images: int = 256, progress: bool = False) -> Path:
    """Export a checkpoint's deployable F to ``out_dir/model.onnx`` (+ ``model.json``); returns its path.

    Raises AgqError naming the layer on a contract or lint violation, and :class:`EquivalenceError` when
    the exported model is not equal to F on the first ``n_images`` test images.
    """
    if n_images < 1:
        raise AgqError(f"--images {n_images}: the equality check needs at least one test image")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    check_writable(out_dir)  # a folder we cannot write is one line now, not after the equality check
    cfg, model, meta = load_deployable(checkpoint)
    checkpoint_sha256 = file_sha256(checkpoint)
    shape = (1, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    layers = trace_quant_layers(model, shape)
    qmodel = to_qonnx(model, shape)
    _refuse(checkpoint, [*contract_violations(layers, cfg.model), *map(str, lint_graph(qmodel))])
    # A graph that passed the lint is a chain, so its quantizers pair with F's in order.
    pairs = pair_layers(layers, qmodel)
    _refuse(checkpoint, graph_contract_violations(qmodel, pairs, cfg.model))
    scale = output_scale(layers)
    images, labels = test_images(cfg.data, n_images)
    report = check_equivalence(model, layers, qmodel, images, labels, scale, progress=progress)
    if not report.ok:
        raise EquivalenceError(report)
    onnx_bytes = qmodel.model.SerializeToString()
    card = model_card(cfg, meta, checkpoint, checkpoint_sha256, bytes_sha256(onnx_bytes), pairs,
                      qmodel.graph.input[0].name, qmodel.graph.output[0].name, scale, report)
    commit_files(out_dir, {MODEL_ONNX: onnx_bytes, MODEL_CARD: card.to_bytes()})
    return out_dir / MODEL_ONNX
