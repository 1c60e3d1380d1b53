"""The Vivado part of the build: FINN's own steps, run only when the Xilinx tools are on PATH.

FIFO sizing (XSim), IP stitching, synthesis, the bitfile (Zynq shell with Vitis-HLS DMA engines), the
PYNQ driver and the deployment package all need Vivado and Vitis HLS. Without them the build stops
after everything that can be done here and says what is missing; nothing pretends to be a bitstream.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agq.errors import AgqError

TOOLS = ("vivado", "vitis_hls")
VIVADO_VERSIONS = "Vivado 2022.2 or 2024.2"
# exit status of `agq build` when the Vivado steps could not run (and --allow-missing-vivado is absent)
EXIT_NO_VIVADO = 3
# FINN's step names, in FINN's order (finn.builder.build_dataflow_config.default_build_dataflow_steps)
VIVADO_STEP_NAMES = (
    "step_hw_ipgen",
    "step_set_fifo_depths",
    "step_create_stitched_ip",
    "step_synthesize_bitfile",
    "step_make_driver",
    "step_deployment_package",
)


def missing_tools() -> list[str]:
    """The Xilinx tools the Vivado steps need that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def vivado_steps(finn_steps: object) -> list:
    """FINN's Vivado step functions (``finn_steps`` is finn.builder.build_dataflow_steps)."""
    return [getattr(finn_steps, name) for name in VIVADO_STEP_NAMES]


def stop_paragraph(build_dir: Path, board: str, command: str, missing: list[str]) -> str:
    """One short paragraph: what was produced (paths), what is missing, how to continue."""
    return (
        f"Built without Vivado: the all-RTL dataflow partition with generated HDL "
        f"({build_dir / 'partition_hdl.onnx'}, code under {build_dir / 'finn_tmp'}), the integer-only "
        f"certificate and estimates ({build_dir / 'report.json'}) and the log ({build_dir / 'build.log'}). "
        f"Not built: FIFO sizing, stitched IP, bitstream, PYNQ driver and deployment package - they need "
        f"{VIVADO_VERSIONS} with Vitis HLS ({', '.join(missing)} not on PATH) and the {board} board files. "
        f"To continue, source Vivado's settings64.sh and run `{command}` (finished steps are reused), "
        f"or run `docker/run.sh make bitstream` with VIVADO_PATH set."
    )


def no_vivado_error(paragraph: str) -> AgqError:
    """The stop of `make bitstream` without Vivado: the paragraph, with its distinct exit status."""
    return AgqError(paragraph, exit_code=EXIT_NO_VIVADO)
