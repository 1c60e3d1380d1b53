"""The rows of the benchmark tables: what each one changes in the base config.

The main table follows the paper's Table 6 (plus KD, additional losses and a compute-matched plain run);
the ablations follow Tables 4 (SSP fragment, with and without W/A) and 5 (blockwise vs layerwise AG).
Every row shares the base config's model shape, data, pre-training and fine-tuning schedule; only the
keys listed here differ. ``fp`` is not a fine-tuning run: it is the full-precision pre-trained plain
network every plain row starts from, which has had fewer epochs than the others; ``plain_16bit`` is the
full-precision reference with the same epochs (fine-tuned at 16 bits, where quantization error is nil
at this scale; the learned activation clip stays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agq.errors import AgqError

PRETRAIN = "pretrain"  # pseudo-row: the shared full-precision pre-training of one (arch, seed)


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    group: str  # "main" or "ablation"
    overrides: dict[str, Any] = field(default_factory=dict)
    epoch_factor: int = 1  # fine-tuning epochs relative to the base config (compute-matched baseline)
    core: bool = False  # carries the claim (plain vs residual vs AG vs compute): its seeds run first

    @property
    def arch(self) -> str:
        return self.overrides.get("model.arch", "plain")


AG = {"ag.enabled": True}
SSP = {"ssp.enabled": True}

ROWS: tuple[Row, ...] = (
    Row("fp", "full precision (plain, after pre-training only)", "main"),
    Row("plain_16bit", "plain 16-bit W/A (full-precision reference, same epochs)", "main",
        {"model.weight_bits": 16, "model.act_bits": 16}),
    Row("residual", "residual 2-bit", "main", {"model.arch": "residual"}, core=True),
    Row("residual_ag", "residual + AG", "main", {"model.arch": "residual", **AG}),
    Row("residual_ag_ssp", "residual + AG + SSP", "main", {"model.arch": "residual", **AG, **SSP}),
    Row("plain", "plain 2-bit", "main", core=True),
    Row("plain_ag", "plain + AG", "main", AG, core=True),
    Row("plain_ag_ssp", "plain + AG + SSP", "main", {**AG, **SSP}, core=True),
    Row("plain_kd", "plain + KD", "main", {"baseline.kd": True}),
    Row("plain_aux", "plain + additional losses", "main", {"baseline.aux_losses": True}),
    Row("plain_2x", "plain, 2x fine-tuning epochs (AG's compute)", "main", epoch_factor=2, core=True),
    Row("plain_ag_2x", "plain + AG, 2x fine-tuning epochs", "main", AG, epoch_factor=2),
    Row("ag_layer", "plain + layerwise AG", "ablation", {**AG, "ag.granularity": "layer"}),
    Row("ssp_layer", "plain + AG + SSP layerdrop", "ablation", {**AG, **SSP, "ssp.fragment": "layer"}),
    Row("ssp_block_wa", "plain + AG + SSP blockdrop W/A", "ablation",
        {**AG, **SSP, "ssp.weights_activations": True}),
    Row("ssp_layer_wa", "plain + AG + SSP layerdrop W/A", "ablation",
        {**AG, **SSP, "ssp.fragment": "layer", "ssp.weights_activations": True}),
)
BY_NAME = {row.name: row for row in ROWS}

# Ablation tables: (title, [(row name, label in that table)]) - rows of the main table are reused.
ABLATIONS = (
    ("SSP fragment (paper Table 4), on plain + AG", [
        ("plain_ag", "no SSP"), ("plain_ag_ssp", "blockdrop"), ("ssp_block_wa", "blockdrop W/A"),
        ("ssp_layer", "layerdrop"), ("ssp_layer_wa", "layerdrop W/A")]),
    ("AG granularity (paper Table 5), plain, no SSP", [
        ("plain", "no AG"), ("plain_ag", "blockwise AG"), ("ag_layer", "layerwise AG")]),
)


def row(name: str) -> Row:
    """The row called ``name``; an unknown name is a user error."""
    if name not in BY_NAME:
        raise AgqError(f"unknown benchmark row {name!r} (known: {', '.join(BY_NAME)})")
    return BY_NAME[name]
