"""The rows of the benchmark tables: what each one changes in the base config.

The main table follows the paper's Table 6 (plus KD, additional losses and a compute-matched plain run);
the ablations follow Tables 4 (SSP fragment, with and without W/A) and 5 (blockwise vs layerwise AG), plus
agq's own: the AG design and the domain the low-bit weight scales are learned in.
Every row shares the base config's model shape, data, pre-training and fine-tuning schedule; only the
keys listed here differ. ``fp`` and ``fp_residual`` are not fine-tuning runs: they are the full-precision
pre-trained networks every plain (residual) row starts from; ``plain_16bit`` is the
full-precision reference with the same epochs (fine-tuned at 16 bits, where quantization error is nil
at this scale; the learned activation clip stays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agq.errors import AgqError

PRETRAIN = "pretrain"  # pseudo-row: the shared full-precision pre-training of one (arch, seed)
ARCHS = ("plain", "residual")  # the shared pre-trainings; any other Row.pretrain names a row


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    group: str  # "main" or "ablation"
    overrides: dict[str, Any] = field(default_factory=dict)
    epoch_factor: int = 1  # fine-tuning epochs relative to the base config (compute-matched baseline)
    core: bool = False  # carries the claim (plain vs residual vs AG vs compute): its seeds run first
    reference: str | None = None  # the row it varies and is read against, seed by seed (ablations)

    @property
    def arch(self) -> str:
        return self.overrides.get("model.arch", "plain")

    @property
    def pretrain(self) -> str:
        """Which shared pre-training the row starts from: its architecture's, or its own where the row
        changes pre-training itself (AG in pre-training)."""
        return self.name if self.overrides.get("ag.pretrain") else self.arch


AG = {"ag.enabled": True, "ag.design": "one_pass"}
AG2 = {"ag.enabled": True, "ag.design": "two_pass"}
SSP = {"ssp.enabled": True, "ssp.weights_activations": True}  # blockdrop W/A: the paper's default
RES = {"model.arch": "residual"}
LOG = {"model.weight_scale": "log"}  # training/quant.py: Brevitas' LOG_FP instead of a linear scale

ROWS: tuple[Row, ...] = (
    Row("fp", "full precision plain (after pre-training only)", "main"),
    Row("fp_residual", "full precision residual (after pre-training only)", "main"),
    Row("plain_16bit", "plain 16-bit W/A (full-precision reference, same epochs)", "main",
        {"model.weight_bits": 16, "model.act_bits": 16}),
    Row("residual", "residual 2-bit", "main", RES, core=True),
    Row("residual_ag", "residual + AG (one pass)", "main", {**RES, **AG}, reference="residual"),
    Row("residual_ag_ssp", "residual + AG + SSP", "main", {**RES, **AG, **SSP}, reference="residual"),
    Row("plain", "plain 2-bit", "main", core=True),
    Row("plain_ag", "plain + AG (one pass)", "main", AG, core=True),
    Row("plain_ag_two_pass", "plain + AG (two pass, own head, BN copied)", "main", AG2, core=True),
    Row("plain_ag_ssp", "plain + AG (one pass) + SSP (blockdrop W/A)", "main", {**AG, **SSP}, core=True),
    Row("plain_kd", "plain + KD", "main", {"baseline.kd": True}),
    Row("plain_aux", "plain + additional losses", "main", {"baseline.aux_losses": True}),
    Row("plain_2x", "plain, 2x fine-tuning epochs (AG's compute and more)", "main", epoch_factor=2,
        core=True),
    Row("ag_layer", "plain + layerwise AG (one pass)", "ablation", {**AG, "ag.granularity": "layer"},
        reference="plain_ag"),
    Row("ag_two_pass_shared", "plain + AG (two pass, F's head, fresh BN: the old design)", "ablation",
        {**AG2, "ag.head": "shared", "ag.copy_bn": False}, reference="plain"),
    Row("ag_pretrain", "plain + AG (one pass), AG in pre-training too", "ablation",
        {**AG, "ag.pretrain": True}, reference="plain_ag"),
    Row("ssp_block", "plain + AG + SSP blockdrop", "ablation",
        {**AG, **SSP, "ssp.weights_activations": False}, reference="plain_ag"),
    Row("ssp_layer", "plain + AG + SSP layerdrop", "ablation",
        {**AG, **SSP, "ssp.fragment": "layer", "ssp.weights_activations": False}, reference="plain_ag"),
    Row("ssp_layer_wa", "plain + AG + SSP layerdrop W/A", "ablation", {**AG, **SSP, "ssp.fragment": "layer"},
        reference="plain_ag"),
    Row("plain_log", "plain 2-bit, weight scales learned in log domain", "ablation", LOG, reference="plain"),
    Row("residual_log", "residual 2-bit, weight scales learned in log domain", "ablation", {**RES, **LOG},
        reference="residual"),
)
BY_NAME = {row.name: row for row in ROWS}
PRETRAINED_ONLY = ("fp", "fp_residual")  # rows read from pre-training records, never trained themselves

# Ablation tables: (title, [(row name, label in that table)]) - rows of the main table are reused.
ABLATIONS = (
    ("SSP fragment (paper Table 4), on plain + AG (one pass)", [
        ("plain_ag", "no SSP"), ("ssp_block", "blockdrop"), ("plain_ag_ssp", "blockdrop W/A"),
        ("ssp_layer", "layerdrop"), ("ssp_layer_wa", "layerdrop W/A")]),
    ("AG granularity (paper Table 5), plain, no SSP", [
        ("plain", "no AG"), ("plain_ag", "blockwise AG"), ("ag_layer", "layerwise AG")]),
    ("AG design, plain, no SSP", [
        ("plain", "no AG"), ("plain_ag", "one pass (authors' code)"),
        ("plain_ag_two_pass", "two pass, own head, BN copied (paper text, fixed)"),
        ("ag_two_pass_shared", "two pass, F's head, fresh BN (agq's old design)"),
        ("ag_pretrain", "one pass, AG in pre-training too")]),
    ("Low-bit weight scale domain, no AG", [  # {scale}: the setting's domain, which plain and residual take
        ("plain", "plain, {scale}"), ("plain_log", "plain, log (LOG_FP)"),
        ("residual", "residual, {scale}"), ("residual_log", "residual, log (LOG_FP)")]),
)
SCALE_LABELS = {"linear": "linear (Brevitas' default)", "log": "log (LOG_FP)"}


def row(name: str) -> Row:
    """The row called ``name``; an unknown name is a user error."""
    if name not in BY_NAME:
        raise AgqError(f"unknown benchmark row {name!r} (known: {', '.join(BY_NAME)})")
    return BY_NAME[name]
