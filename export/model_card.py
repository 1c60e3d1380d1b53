"""model.json: what the exported file is, how to read its output, and how it was checked.

Later stages (FINN build, RTL simulation, benchmarks) read the output scale, the input format and the
class names from here instead of re-deriving them from the graph. The card holds no time stamp, so
re-exporting the same checkpoint writes the same bytes.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agq import __version__
from agq.errors import AgqError
from agq.io import file_sha256, finish_commit, json_bytes, not_a_file, read_json

if TYPE_CHECKING:  # the card is read by hw/ and bench/ without torch
    from agq.export.equivalence import EquivalenceReport
    from agq.export.layers import QuantLayer
    from agq.training.checkpoint import CheckpointMeta
    from agq.training.config import Config
    from onnx import NodeProto

CARD_FORMAT = "agq-model-card-v1"
MODEL_ONNX = "model.onnx"  # export's two outputs, committed together (agq.io.commit_files)
MODEL_CARD = "model.json"


@dataclass(frozen=True)
class ModelCard:
    """model.json: what export hands to build, rtlsim and bench. The nested sections (input, output,
    contract, layers, equivalence, versions) stay plain data; the fields later stages rely on are
    checked by :meth:`from_dict`."""

    name: str
    model: dict[str, str]  # {"path": "model.onnx", "sha256": ...}
    checkpoint: dict[str, str]  # {"path": ..., "sha256": ...}
    dataset: str
    classes: list[str]
    trained: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    contract: dict[str, Any]
    layers: list[dict[str, Any]]
    equivalence: dict[str, Any]
    versions: dict[str, str]
    format: str = CARD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": data.pop("format"), **data}

    def to_bytes(self) -> bytes:
        return json_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> ModelCard:
        """The card in ``path``, validated; a wrong field is one AgqError naming the file and the field."""
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise AgqError(f"{path} is not an agq model card (format {CARD_FORMAT}); run `agq export` again")
        checks = {"model.sha256": str, "model.path": str, "checkpoint.path": str, "checkpoint.sha256": str,
                  "output.scale": float, "input.shape": list, "name": str, "dataset": str, "classes": list}
        for key, kind in checks.items():
            value: Any = data
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if not isinstance(value, kind):
                raise AgqError(f"{path}: '{key}' is missing or not a {kind.__name__}; run `agq export` again")
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise AgqError(f"{path} is incomplete ({exc}); run `agq export` again") from None


def read_card(model_onnx: Path) -> ModelCard:
    """The card beside an exported model, checked to describe exactly this model file: a model.onnx
    replaced without its card (or the reverse) is one line saying which one is stale."""
    model_onnx = Path(model_onnx)
    finish_commit(model_onnx.parent)  # an export killed between its renames is completed first
    card_path = model_onnx.parent / MODEL_CARD
    return _checked(model_onnx, ModelCard.from_dict(read_json(card_path, "agq export"), card_path))


def _checked(model_onnx: Path, card: ModelCard) -> ModelCard:
    """``card``, after checking that it describes exactly the file ``model_onnx``."""
    card_path = model_onnx.parent / MODEL_CARD
    if not model_onnx.is_file():
        raise AgqError(f"model file {not_a_file(model_onnx)}: {model_onnx} (named by {card_path}); "
                       "run `agq export` again")
    if file_sha256(model_onnx) != card.model["sha256"]:
        raise AgqError(f"{model_onnx} does not match {card_path} (its sha256 differs from the one recorded "
                       "there: the model was replaced or the card is stale); run `agq export` again")
    return card


def card_for(model_onnx: Path) -> ModelCard | None:
    """The checked card of a model `agq export` wrote, None for a model no agq card beside it names
    (a model agq did not train, even with an unrelated model.json next to it)."""
    model_onnx = Path(model_onnx)
    finish_commit(model_onnx.parent)
    card_path = model_onnx.parent / MODEL_CARD
    try:
        data = json.loads(card_path.read_text())
        names_it = data["format"] == CARD_FORMAT and data["model"]["path"] == model_onnx.name
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _checked(model_onnx, ModelCard.from_dict(data, card_path)) if names_it else None


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
    cfg: Config, meta: CheckpointMeta, checkpoint: Path, checkpoint_sha256: str, model_sha256: str,
    pairs: list[tuple[QuantLayer, NodeProto, NodeProto | None]], input_name: str, output_name: str,
    output_scale: float, report: EquivalenceReport,
) -> ModelCard:
    from agq.export.contract import FIRST_LAST_WEIGHT_BITS

    m = cfg.model
    return ModelCard(
        name=cfg.name,
        model={"path": MODEL_ONNX, "sha256": model_sha256},
        checkpoint={"path": str(checkpoint), "sha256": checkpoint_sha256},
        dataset=meta.dataset,
        classes=meta.classes,
        trained={"epoch": meta.epoch, "phase": meta.phase, "metrics": meta.metrics},
        input={"name": input_name, "shape": [1, m.in_channels, m.image_size, m.image_size],
               "layout": "NCHW", "datatype": "UINT8", "values": "raw pixels 0..255, no normalisation"},
        output={"name": output_name, "shape": [1, m.num_classes], "scale": output_scale,
                "integer_logits": "the last layer's integer accumulators = round(output / scale) within "
                                  "equivalence.max_rounding_residual",
                "scale_from": "last activation scale x last FC weight scale"},
        contract={"first_last_weight_bits": FIRST_LAST_WEIGHT_BITS, "weight_bits": m.weight_bits,
                  "act_bits": m.act_bits, "narrow_range_weights": True, "bias": False},
        layers=[_layer_entry(layer, quant, consumer) for layer, quant, consumer in pairs],
        equivalence={"executor": "qonnx.core.onnx_exec.execute_onnx",
                     "images_from": f"{cfg.data.dataset} test split, first {report.images}",
                     **report.to_dict()},
        versions=versions(),
    )
