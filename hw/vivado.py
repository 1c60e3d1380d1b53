"""The Vivado part of the build: what it needs, FINN's own steps in order, and agq's two additions.

FIFO sizing (XSim), IP stitching, out-of-context synthesis, the bitfile (Zynq shell with Vitis-HLS DMA
engines, or Vitis for Alveo), the driver settings and the deployment package all need the Xilinx
tools and FINN's external dependencies. :func:`requirements` lists every tool, variable, file and
library those steps will read, for the board's shell and the build's options, so a missing piece is
named before hours of Vivado, not in the middle. Without them the build stops after everything that
can be done here; nothing pretends to be a bitstream.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from agq.hw.boards import Board
from agq.hw.config import HwConfig

from agq.errors import AgqError

VIVADO_VERSIONS = "Vivado 2022.2 or 2024.2"
# exit status of `agq build` when the Vivado steps could not run (and --allow-missing-vivado is absent)
EXIT_NO_VIVADO = 3
# after 2024.2 FINN calls Vitis HLS as `vitis-run --mode hls` (finn/util/hls.py)
LAST_VITIS_HLS = (2024, 2)
# where Vivado keeps the board files it ships (older and newer layouts)
VIVADO_BOARD_STORES = ("data/boards/board_files", "data/xhub/boards/XilinxBoardStore/boards/Xilinx")
BOOST_HEADER = "boost/program_options.hpp"


@dataclass(frozen=True)
class Requirement:
    """One thing a Vivado step reads: ``what`` it is, ``ok`` whether it is here, the step that needs
    it and how to get it."""

    what: str
    ok: bool
    needed_by: str
    fix: str

    def line(self) -> str:
        return f"{self.what} (for {self.needed_by}; {self.fix})"


def _tool(name: str) -> bool:
    """Whether FINN would find the tool (FINN_TOOL_DIR_OVERRIDE or PATH, as FINN resolves it)."""
    from finn.util.basic import resolve_xilinx_tool

    try:
        resolve_xilinx_tool(name)
    except FileNotFoundError:
        return False
    return True


def _env_dir(var: str, sub: str = "") -> Path | None:
    value = os.environ.get(var)
    return Path(value) / sub if value else None


def _exists(path: Path | None) -> bool:
    return path is not None and path.exists()


def board_file_name(board: str) -> str | None:
    """The board-file folder FINN's Zynq shell asks Vivado for (``set_property board_part``), read from
    FINN's own Tcl template; None for a board the template does not name."""
    from finn.transformation.fpgadataflow.templates import custom_zynq_shell_template

    match = re.search(rf'\$BOARD == "{re.escape(board)}"\}} \{{[^}}]*?board_part [^:\s]+:([^:\s]+):',
                      custom_zynq_shell_template)
    return match.group(1) if match else None


def _board_files_found(name: str, deps: Path) -> bool:
    vivado = _env_dir("XILINX_VIVADO")
    places = [deps / "board_files" / name]
    if vivado is not None:
        places += [vivado / store / name for store in VIVADO_BOARD_STORES]
    return any(p.is_dir() for p in places)


def _boost_headers() -> bool:
    """Whether the C++ compiler finds Boost.Program_options, which FINN's FIFO-sizing backend links."""
    if shutil.which("g++") is None:
        return False
    probe = subprocess.run(["g++", "-E", "-x", "c++", "-"], input=f"#include <{BOOST_HEADER}>\n",
                           capture_output=True, text=True, check=False)
    return probe.returncode == 0


def _writable_or_built(xsi_dir: Path) -> bool:
    return (xsi_dir / "xsi.so").is_file() or os.access(xsi_dir, os.W_OK)


def fifo_sizing_simulates(hw_cfg: HwConfig) -> bool:
    """FIFO depths come from FINN's XSim simulation unless the config names a FIFO-depth file."""
    return not hw_cfg.fifo_config


def requirements(board: Board, hw_cfg: HwConfig) -> list[Requirement]:
    """Every tool, variable, file and library the Vivado steps of this build will need."""
    from agq.hw.finn_env import finn_paths
    from finn.transformation.fpgadataflow.simulation_build import NLOHMANN_JSON_DEP_SUBDIR
    from finn.util.basic import alveo_default_platform, get_vivado_version

    paths = finn_paths()
    deps = paths["FINN_DEPS"]
    fetch = "run `agq deps` (FINN's `finn deps update`)"
    source_vivado = "source Vivado's settings64.sh"
    version = get_vivado_version()
    reqs = [
        Requirement("vivado", _tool("vivado"), "every Vivado step", f"install {VIVADO_VERSIONS}, "
                    f"{source_vivado}"),
        Requirement("XILINX_VIVADO naming a Vivado version (…/Vivado/20XX.Y)", version is not None,
                    "XSim and HLS tool choice", source_vivado),
        Requirement(f"FINN_RTLLIB {paths['FINN_RTLLIB']}/memstream",
                    (paths["FINN_RTLLIB"] / "memstream").is_dir(), "stitched IP and FIFO sizing",
                    "reinstall finn-plus"),
    ]
    hls_tool = "vitis-run" if version is not None and version > LAST_VITIS_HLS else "vitis_hls"
    if board.shell:
        reqs += [
            Requirement(hls_tool, _tool(hls_tool), "the shell's IODMAs (Vitis HLS)", "install Vitis HLS "
                        "and source its settings64.sh"),
            Requirement("XILINX_HLS", _exists(_env_dir("XILINX_HLS")), "HLS includes and XSim's fpo library",
                        "source Vitis HLS' settings64.sh"),
            Requirement(f"FINN_CUSTOM_HLS {paths['FINN_CUSTOM_HLS']}", paths["FINN_CUSTOM_HLS"].is_dir(),
                        "HLS IP generation", "reinstall finn-plus"),
            Requirement(f"{deps}/finn-hlslib/dma.h", (deps / "finn-hlslib" / "dma.h").is_file(),
                        "the shell's IODMAs", fetch),
            Requirement(f"{deps}/attention-hlslib", (deps / "attention-hlslib").is_dir(),
                        "every HLS Tcl script (an -I folder)", fetch),
        ]
    if fifo_sizing_simulates(hw_cfg):
        json_dir = deps / NLOHMANN_JSON_DEP_SUBDIR
        reqs += [
            Requirement("$XILINX_VIVADO/lib/lnx64.o", _exists(_env_dir("XILINX_VIVADO", "lib/lnx64.o")),
                        "FIFO sizing (XSim libraries)", source_vivado),
            Requirement("$XILINX_VIVADO/data/xsim/include/xsi.h",
                        _exists(_env_dir("XILINX_VIVADO", "data/xsim/include/xsi.h")),
                        "FIFO sizing (FINN's XSI bridge)", f"a full {VIVADO_VERSIONS} installation"),
            Requirement(f"{paths['FINN_XSI']} writable or xsi.so built",
                        _writable_or_built(paths["FINN_XSI"]),
                        "FIFO sizing (FINN builds its XSI bridge there)", "make the venv writable"),
            Requirement("g++ and make", all(shutil.which(t) for t in ("g++", "make")),
                        "FIFO sizing (simulation backend)", "apt-get install build-essential"),
            Requirement("Python.h", (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file(),
                        "FIFO sizing (XSI bridge)", "apt-get install python3-dev"),
            Requirement(f"Boost <{BOOST_HEADER}>", _boost_headers(), "FIFO sizing (simulation backend)",
                        "apt-get install libboost-program-options-dev"),
            Requirement(f"{json_dir}/CMakeLists.txt", (json_dir / "CMakeLists.txt").is_file(),
                        "FIFO sizing (nlohmann/json)", fetch),
        ]
    if board.shell == "vivado_zynq":
        name = board_file_name(board.name)
        if name is not None:
            reqs.append(Requirement(f"{board.name} board files ({deps}/board_files/{name})",
                                    _board_files_found(name, deps), "the Zynq shell", fetch))
    if board.shell == "vitis_alveo":
        platform = alveo_default_platform[board.name]
        repo = _env_dir("PLATFORM_REPO_PATHS")
        reqs += [
            Requirement("v++", _tool("v++"), "the Alveo link", "install Vitis, source its settings64.sh"),
            Requirement("XILINX_VITIS", _exists(_env_dir("XILINX_VITIS")), "the Alveo link",
                        "source Vitis' settings64.sh"),
            Requirement("XILINX_XRT", _exists(_env_dir("XILINX_XRT")), "the Alveo link",
                        "install XRT, source /opt/xilinx/xrt/setup.sh"),
            Requirement(f"platform {platform} under PLATFORM_REPO_PATHS",
                        repo is not None and any(repo.glob(f"**/{platform}.xpfm")), "the Alveo link",
                        f"install the {platform} platform"),
        ]
    return reqs


def missing(board: Board, hw_cfg: HwConfig) -> list[str]:
    """One line per requirement of the Vivado steps that this machine lacks."""
    return [r.line() for r in requirements(board, hw_cfg) if not r.ok]


def step_prepare_xsi(model: object, cfg: object) -> object:
    """Build (once per Vivado version) or load FINN's XSI bridge, which FIFO sizing simulates with, as
    FINN's CLI does at start-up; a failure is one line pointing at build.log, not a traceback."""
    import finn.xsi
    from finn.util.exception import FINNUserError

    try:
        finn.xsi.ensure_available()
    except (FINNUserError, OSError, ValueError) as exc:
        raise AgqError(
            f"FINN's XSI bridge is not available for XILINX_VIVADO={os.environ.get('XILINX_VIVADO')}: "
            f"{str(exc).splitlines()[0]} (details in build.log); FIFO sizing simulates with it - or set "
            "fifo_config to FIFO depths from an earlier run"
        ) from None
    return model


def vivado_steps(finn_steps: object, board: Board, hw_cfg: HwConfig) -> list:
    """The Vivado part of the build in FINN's order (``finn_steps`` is finn.builder.build_dataflow_steps).

    FINN's ``step_prepare_synthesis`` does nothing for Zynq and builds the kernels for Alveo. Versal
    kits have no shell in FINN: their build ends with the stitched IP (and its synthesis).
    """
    from agq.hw.deploy import step_deploy_host_side

    steps = [step_prepare_xsi] if fifo_sizing_simulates(hw_cfg) else []
    steps += [finn_steps.step_hw_ipgen, finn_steps.step_set_fifo_depths, finn_steps.step_create_stitched_ip]
    if hw_cfg.ooc_synth:
        steps.append(finn_steps.step_out_of_context_synthesis)
    if board.shell:
        steps += [finn_steps.step_prepare_synthesis, finn_steps.step_synthesize_bitfile,
                  finn_steps.step_make_driver, finn_steps.step_deployment_package]
    if board.shell == "vivado_zynq":  # the board script drives FINN's Zynq DMA overlay
        steps.append(step_deploy_host_side)
    return steps


def stop_paragraph(build_dir: Path, board: str, command: str, missing_lines: list[str]) -> str:
    """One short paragraph: what was produced (paths), what is missing, how to continue."""
    return (
        f"Stopped before the Vivado steps. Produced: {build_dir / 'partition_hdl.onnx'} (partition, "
        f"HDL in {build_dir / 'finn_tmp'}), {build_dir / 'report.json'} and {build_dir / 'report.md'} "
        f"(certificate, estimates), {build_dir / 'build.log'}. Missing for FIFO sizing, stitched IP, "
        f"bitstream, driver and deployment package ({VIVADO_VERSIONS} with Vitis HLS, FINN's "
        f"dependencies, the {board} board files): {'; '.join(missing_lines)}. To continue: source Vivado's "
        f"settings64.sh, run `agq deps`, then `{command}` (finished steps are reused), or run docker/run.sh."
    )


def no_vivado_error(paragraph: str) -> AgqError:
    """The stop of `make bitstream` without Vivado: the paragraph, with its distinct exit status."""
    return AgqError(paragraph, exit_code=EXIT_NO_VIVADO)
