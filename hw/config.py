"""The hardware build's own settings (configs/hw/*.yaml): folding target, clock, budget.

Kept apart from the training config because one exported model is built for several boards and
targets; the board itself is a command-line choice (``--board``). Every value here feeds the step
cache key, so changing one re-runs the build from the start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agq.config_loader import (
    apply_override,
    from_mapping,
    packaged_config,
    read_mapping,
    resolve_config,
    with_file,
)
from agq.errors import AgqError

# target_fps value that asks for the fastest folding that fits the board
MAX_FPS = "max"
FOLDER = "hw"  # hw configs live in agq.configs/hw/
DEFAULT_CONFIG = packaged_config("default", FOLDER)
PATH_KEYS = ("folding_config", "fifo_config")  # file names, read relative to the config file's folder


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
        if self.input_offset and not self.input_scale:
            raise AgqError(f"hw config input_offset={self.input_offset}: needs input_scale as well")
        for key in PATH_KEYS:
            value = getattr(self, key)
            if value and not Path(value).is_file():
                raise AgqError(f"hw config {key}: file not found: {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def hw_config_from_dict(data: dict[str, Any]) -> HwConfig:
    """Type-check and validate plain data (file names as given)."""
    return from_mapping(HwConfig, data, "hw config")


def _files_relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with its file names (``folding_config``...) read relative to ``folder``."""
    named = {k: data[k] for k in PATH_KEYS if isinstance(data.get(k), str) and data[k]}
    return {**data, **{k: str((folder / v).resolve()) for k, v in named.items()}}


def load_hw_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> HwConfig:
    """Read a hw YAML config (a path or a packaged name such as ``max_fps``; default: the packaged
    ``hw/default``) and apply ``key=value`` overrides. File names in the file are relative to its
    folder, file names in an override to the current folder."""
    path = resolve_config(DEFAULT_CONFIG if name_or_path is None else name_or_path, FOLDER)
    data = _files_relative_to(read_mapping(path), path.resolve().parent)
    overridden: dict[str, Any] = {}
    for assignment in overrides or []:
        apply_override(overridden, assignment)
    data |= _files_relative_to(overridden, Path.cwd())
    return with_file(path, lambda: hw_config_from_dict(data))
