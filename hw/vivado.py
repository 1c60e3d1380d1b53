"""The Vivado part of the build: FINN's own steps, run only when the Xilinx tools are on PATH.

FIFO sizing (XSim), IP stitching, synthesis, the bitfile (Zynq shell with Vitis-HLS DMA engines), the
PYNQ driver and the deployment package all need Vivado and Vitis HLS. Without them the build stops
after everything that can be done here and says what is missing; nothing pretends to be a bitstream.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agq.errors import AgqError

TOOLS = ("vivado", "vitis_hls")
# folder names of the Vivado board files FINN's Zynq shell needs, under FINN_DEPS/board_files
BOARD_FILES = {"Pynq-Z1": "pynq-z1", "Pynq-Z2": "pynq-z2"}
VIVADO_VERSIONS = "Vivado 2022.2 or 2024.2"
# exit status of `agq build` when the Vivado steps could not run (and --allow-missing-vivado is absent)
EXIT_NO_VIVADO = 3
# FINN's step names, in FINN's order (finn.builder.build_dataflow_config.default_build_dataflow_steps;
# step_prepare_synthesis does nothing for Zynq and builds the kernels for Alveo)
VIVADO_STEP_NAMES = (
    "step_hw_ipgen",
    "step_set_fifo_depths",
    "step_create_stitched_ip",
    "step_prepare_synthesis",
    "step_synthesize_bitfile",
    "step_make_driver",
    "step_deployment_package",
)


def missing_tools(board: str) -> list[str]:
    """What the Vivado steps need and this machine lacks: tools on PATH, their settings, board files."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing = [f"{', '.join(absent)} not on PATH"] if absent else []
    if not absent and "XILINX_VIVADO" not in os.environ:
        missing.append("XILINX_VIVADO unset")
    if board in BOARD_FILES:
        from finn.util.settings import get_settings

        folder = get_settings().finn_deps / "board_files" / BOARD_FILES[board]
        if not folder.is_dir():
            missing.append(f"no {folder}")
    return missing


def vivado_steps(finn_steps: object) -> list:
    """FINN's Vivado step functions (``finn_steps`` is finn.builder.build_dataflow_steps)."""
    return [getattr(finn_steps, name) for name in VIVADO_STEP_NAMES]


def stop_paragraph(build_dir: Path, board: str, command: str, missing: list[str]) -> str:
    """One short paragraph: what was produced (paths), what is missing, how to continue."""
    return (
        f"Stopped before the Vivado steps. Produced: {build_dir / 'partition_hdl.onnx'} (all-RTL partition, "
        f"HDL in {build_dir / 'finn_tmp'}), {build_dir / 'report.json'} (certificate, estimates), "
        f"{build_dir / 'build.log'}. Missing for FIFO sizing, stitched IP, bitstream, PYNQ driver and "
        f"deployment package: {VIVADO_VERSIONS} with Vitis HLS and the {board} board files "
        f"({'; '.join(missing)}). To continue: source Vivado's settings64.sh, put the board files under "
        f"$FINN_DEPS/board_files and run `{command}` (finished steps are reused), or run docker/run.sh."
    )


def no_vivado_error(paragraph: str) -> AgqError:
    """The stop of `make bitstream` without Vivado: the paragraph, with its distinct exit status."""
    return AgqError(paragraph, exit_code=EXIT_NO_VIVADO)
