"""The hardware build's own settings (configs/hw/*.yaml): folding target, clock, budget.

Kept apart from the training config because one exported model is built for several boards and
targets; the board itself is a command-line choice (``--board``). Every value here feeds the step
cache key, so changing one re-runs the build from the start.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agq.errors import AgqError

# target_fps value that asks for the fastest folding that fits the board
MAX_FPS = "max"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "hw" / "default.yaml"


@dataclass(frozen=True)
class InputMapping:
    """How a raw uint8 pixel ``x`` maps to the model's float input: ``scale * x + offset``."""

    scale: float
    offset: float = 0.0

    def __str__(self) -> str:
        text = f"{self.scale:.9g} * x"
        return text + (f" {'+-'[self.offset < 0]} {abs(self.offset):.9g}" if self.offset else "")


@dataclass(frozen=True)
class HwConfig:
    """Folding target and budget of one accelerator build.

    ``target_fps`` drives FINN's SetFolding; the build fails if the folded design misses it. ``"max"``
    searches FINN's folding for the fastest design whose estimate fits ``max_utilization`` of the board.
    ``mvau_wwidth_max`` caps SIMD x weight bits per PE (FINN's default 36 keeps a 16-bit first conv
    at SIMD 2 at most). ``max_utilization`` is the largest share of any board resource the estimate
    may take. ``folding_config`` optionally names a FINN folding JSON applied after SetFolding
    (relative paths are read from the config file's folder). ``fifo_depth`` is the depth of the FIFOs
    between the layers of partition_hdl.onnx, the partition simulated without Vivado (with Vivado,
    FINN sizes the bitstream's FIFOs by simulation); depth 2 made the default MNIST model 20 % slower
    in RTL simulation than depth 32. ``fifo_config`` optionally names FINN's FIFO-depth JSON of an earlier
    Vivado build (``final_hw_config.json``): FINN then applies those depths instead of sizing them by
    XSim simulation. ``ooc_synth`` adds FINN's out-of-context synthesis of the stitched IP (real
    resources and Fmax; Vivado only). ``input_scale`` and ``input_offset`` state, for a model with a
    float input (one agq did not train), how a raw uint8 pixel x maps to it: ``input_scale * x +
    input_offset`` (x/255: 1/255 and 0); 0 means the model already takes uint8 pixels.
    """

    target_fps: int | str = MAX_FPS
    clock_ns: float = 10.0
    mvau_wwidth_max: int = 48
    max_utilization: float = 0.8
    folding_config: str = ""
    fifo_depth: int = 32
    fifo_config: str = ""
    ooc_synth: bool = False
    input_scale: float = 0.0
    input_offset: float = 0.0

    def input_mapping(self) -> InputMapping | None:
        """How raw uint8 pixels map to a float-input model's input (None: the input is already uint8)."""
        return InputMapping(self.input_scale, self.input_offset) if self.input_scale else None

    def validate(self) -> None:
        if self.target_fps != MAX_FPS and (not isinstance(self.target_fps, int) or self.target_fps < 1):
            raise AgqError(f"hw config target_fps={self.target_fps!r}: must be >= 1 or \"{MAX_FPS}\"")
        if self.clock_ns <= 0:
            raise AgqError(f"hw config clock_ns={self.clock_ns}: must be > 0")
        if self.mvau_wwidth_max < 2:
            raise AgqError(f"hw config mvau_wwidth_max={self.mvau_wwidth_max}: must be >= 2")
        if not 0 < self.max_utilization <= 1:
            raise AgqError(f"hw config max_utilization={self.max_utilization}: must be in (0, 1]")
        if self.fifo_depth < 2:
            raise AgqError(f"hw config fifo_depth={self.fifo_depth}: must be >= 2")
        for key in ("input_scale", "input_offset"):
            if not math.isfinite(getattr(self, key)):
                raise AgqError(f"hw config {key}={getattr(self, key)}: must be a finite number")
        if self.input_offset and not self.input_scale:
            raise AgqError(f"hw config input_offset={self.input_offset}: needs input_scale as well")
        for key in ("folding_config", "fifo_config"):
            value = getattr(self, key)
            if value and not Path(value).is_file():
                raise AgqError(f"hw config {key}: file not found: {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def hw_config_from_dict(data: dict[str, Any], base_dir: Path | None = None) -> HwConfig:
    """Type-check and validate plain data; ``folding_config`` is resolved against ``base_dir``."""
    fields = {f.name: f for f in dataclasses.fields(HwConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise AgqError(f"hw config: unknown key {key} (known: {', '.join(fields)})")
        expected = type(fields[key].default)
        if key == "target_fps":  # a frame rate, or the word "max"
            expected = str if value == MAX_FPS else int
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise AgqError(f"hw config {key}={value!r}: expected {expected.__name__}")
        values[key] = value
    for key in ("folding_config", "fifo_config"):
        if values.get(key) and base_dir is not None:
            values[key] = str((base_dir / values[key]).resolve())
    cfg = HwConfig(**values)
    cfg.validate()
    return cfg


def load_hw_config(path: str | Path | None = None) -> HwConfig:
    """Read a hw YAML config (default: configs/hw/default.yaml; built-in defaults if that is absent)."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return HwConfig()
        path = DEFAULT_CONFIG
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise AgqError(f"hw config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise AgqError(f"hw config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise AgqError(f"hw config file {path}: top level must be a mapping")
    return hw_config_from_dict(data, base_dir=path.resolve().parent)
