"""model.json: what the exported file is, how to read its output, and how it was checked.

Later stages (FINN build, RTL simulation, benchmarks) read the output scale, the input format and the
class names from here instead of re-deriving them from the graph. The card holds no time stamp, so
re-exporting the same checkpoint writes the same bytes.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

from agq.export.contract import FIRST_LAST_WEIGHT_BITS
from agq.export.equivalence import EquivalenceReport
from agq.export.layers import QuantLayer
from agq.training.config import Config
from onnx import NodeProto

from agq import __version__

CARD_FORMAT = "agq-model-card-v1"


def _layer_entry(layer: QuantLayer, quant: NodeProto, consumer: NodeProto | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": layer.name, "kind": layer.kind}
    if layer.is_weight:
        entry |= {"onnx_node": consumer.name if consumer else None, "weight_quant_node": quant.name,
                  "weight_bits": layer.bits}
    else:
        entry |= {"onnx_node": quant.name, "act_bits": layer.bits}
    return entry | {"signed": layer.signed, "narrow_range": layer.narrow_range,
                    "scale": "per-tensor" if layer.per_tensor else "per-channel"}


def versions() -> dict[str, str]:
    return {"agq": __version__, **{name: importlib.metadata.version(name) for name in ("torch", "brevitas",
                                                                                     "qonnx", "onnx")}}


def model_card(
    cfg: Config, meta: dict[str, Any], checkpoint: Path, checkpoint_sha256: str, model_sha256: str,
    pairs: list[tuple[QuantLayer, NodeProto, NodeProto | None]], input_name: str, output_name: str,
    output_scale: float, classes: list[str], report: EquivalenceReport,
) -> dict[str, Any]:
    m = cfg.model
    return {
        "format": CARD_FORMAT,
        "name": cfg.name,
        "model": {"path": "model.onnx", "sha256": model_sha256},
        "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_sha256},
        "dataset": meta.get("dataset", cfg.data.dataset),
        "classes": classes,
        "trained": {key: meta.get(key) for key in ("epoch", "phase", "metrics")},
        "input": {"name": input_name, "shape": [1, m.in_channels, m.image_size, m.image_size],
                  "layout": "NCHW", "datatype": "UINT8", "values": "raw pixels 0..255, no normalisation"},
        "output": {"name": output_name, "shape": [1, m.num_classes], "scale": output_scale,
                   "integer_logits": "the last layer's integer accumulators = round(output / scale) within "
                                     "equivalence.max_rounding_residual",
                   "scale_from": "last activation scale x last FC weight scale"},
        "contract": {"first_last_weight_bits": FIRST_LAST_WEIGHT_BITS, "weight_bits": m.weight_bits,
                     "act_bits": m.act_bits, "narrow_range_weights": True, "bias": False},
        "layers": [_layer_entry(layer, quant, consumer) for layer, quant, consumer in pairs],
        "equivalence": {"executor": "qonnx.core.onnx_exec.execute_onnx",
                        "images_from": f"{cfg.data.dataset} test split, first {report.images}",
                        **report.to_dict()},
        "versions": versions(),
    }


def card_bytes(card: dict[str, Any]) -> bytes:
    return (json.dumps(card, indent=2) + "\n").encode()
