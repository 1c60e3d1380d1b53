"""The fake-Vivado harness: a Xilinx installation tree with stand-in tools, and FINN's dependencies as
stand-in files, so that the Vivado steps run through FINN's own Python code up to each tool call.

``install(root)`` returns the environment a user gets after sourcing Vivado's and Vitis HLS'
settings64.sh (XILINX_VIVADO, XILINX_HLS, PATH, and a library path that already holds Vivado's
libraries, so no process restarts) plus FINN_DEPS pointing at stand-in dependencies. What the
stand-in tools check and what they cannot prove is written in tests/fake_xilinx/fake_tool.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent / "fake_xilinx" / "fake_tool.py"
VERSION = "2022.2"
# the finn-hlslib headers FINN's generated HLS sources include directly (IODMA and the library header)
HLSLIB_HEADERS = ("bnn-library.h", "dma.h", "streamtools.h")


def _tool(bindir: Path, name: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / name
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TOOL}" {name} "$@"\n')
    script.chmod(0o755)


def install_deps(deps: Path, board_files: tuple[str, ...] = ("pynq-z2",)) -> Path:
    """Stand-ins for what `finn deps update` fetches: finn-hlslib and attention-hlslib headers, the
    nlohmann/json sources' CMakeLists.txt and board-file folders (empty files, never compiled)."""
    for header in HLSLIB_HEADERS:
        (deps / "finn-hlslib").mkdir(parents=True, exist_ok=True)
        (deps / "finn-hlslib" / header).write_text("// stand-in\n")
    (deps / "attention-hlslib").mkdir(parents=True, exist_ok=True)
    (deps / "nlohmann_json" / "json").mkdir(parents=True, exist_ok=True)
    (deps / "nlohmann_json" / "json" / "CMakeLists.txt").write_text("# stand-in\n")
    for name in board_files:
        (deps / "board_files" / name / "A.0").mkdir(parents=True, exist_ok=True)
        (deps / "board_files" / name / "A.0" / "board.xml").write_text("<!-- stand-in -->\n")
    return deps


def install(root: Path) -> dict[str, str]:
    """Create the stand-in installation under ``root``; returns the environment variables to set."""
    vivado = root / "Xilinx" / "Vivado" / VERSION
    hls = root / "Xilinx" / "Vitis_HLS" / VERSION
    _tool(vivado / "bin", "vivado")
    _tool(hls / "bin", "vitis_hls")
    (vivado / "lib" / "lnx64.o").mkdir(parents=True)
    (hls / "lnx64" / "tools" / "fpo_v7_1").mkdir(parents=True)
    libs = ["/lib/x86_64-linux-gnu/", f"{vivado}/lib/lnx64.o", f"{hls}/lnx64/tools/fpo_v7_1"]
    return {
        "XILINX_VIVADO": str(vivado),
        "XILINX_HLS": str(hls),
        "PATH": f"{vivado / 'bin'}{os.pathsep}{hls / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "LD_LIBRARY_PATH": os.pathsep.join(libs),
        "FINN_DEPS": str(install_deps(root / "finn_deps")),
        "AGQ_FAKE_XILINX_LOG": str(root / "xilinx_calls.jsonl"),
    }


def calls(env: dict[str, str]) -> list[dict]:
    """The recorded tool calls, in order."""
    log = Path(env["AGQ_FAKE_XILINX_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
