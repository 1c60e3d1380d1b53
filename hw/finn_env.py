"""The only place in agq that knows what finn-plus 1.6.1 needs to run as a library, without its CLI.

FINN is normally started by its ``finn`` command, whose ``prepare_finn`` (finn/interface/run_finn.py)
writes a settings file, exports FINN_BUILD_DIR, builds the XSI bridge, fetches the dependencies and
sets the environment the Vivado steps read. agq drives FINN's build steps directly, so it does the
parts of that start-up the steps rely on, with FINN's own functions where FINN has them:

* FINN_BUILD_DIR (where FINN writes generated code) and FINN_SETTINGS point into the build folder,
  so a build never reads or writes ~/.finn and every generated file lives under build/<model>/<board>/;
* ``finn.builder.build_dataflow_steps`` imports ``finn.xsi.SimEngine`` at module level only as a type
  annotation, and that lookup builds or loads XSim's bridge (and needs XILINX_VIVADO). The name is
  bound to None first, so the import never fails; the bridge itself is made available inside the
  runner by :func:`hw.vivado.step_prepare_xsi`, where a failure is one line and a report.json;
* before the Vivado steps :func:`prepare_vivado_env` sets what the CLI sets: FINN_RTLLIB (the
  stitched-IP Tcl reads ``$::env(FINN_RTLLIB)/memstream``, also during FIFO sizing), FINN_CUSTOM_HLS
  (HLS Tcl), FINN_DEPS, XILINX_LOCAL_USER_DATA=no, PLATFORM_REPO_PATHS's default, and Vivado's and
  Vitis HLS' simulation libraries on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

FINN_TMP = "finn_tmp"
SETTINGS_FILE = "finn_settings.yaml"
# FINN's marker that a process already restarted itself with the Xilinx library path (run_finn.py)
LD_REEXEC_MARKER = "_FINN_LD_LIBRARY_PATH_REEXEC"
# Vitis' platforms folder FINN's CLI falls back to when PLATFORM_REPO_PATHS is unset
DEFAULT_PLATFORM_REPO = Path("/opt/xilinx/platforms")


def use_build_dir(build_dir: Path) -> Path:
    """Send FINN's generated code to ``build_dir/finn_tmp`` (also for later builds in this process)."""
    from finn.util.settings import get_settings

    tmp = (build_dir / FINN_TMP).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(tmp)
    os.environ["FINN_SETTINGS"] = str((build_dir / SETTINGS_FILE).resolve())
    settings = get_settings()
    settings.finn_build_dir = tmp
    if "FINN_DEPS" in os.environ:  # FINN's CLI reads it at every start; a process may run several builds
        settings.finn_deps = os.environ["FINN_DEPS"]
    return tmp


def finn_steps() -> ModuleType:
    """``finn.builder.build_dataflow_steps``, importable with or without Vivado's XSim."""
    import finn.xsi

    if "SimEngine" not in vars(finn.xsi):
        finn.xsi.SimEngine = None
    import finn.builder.build_dataflow_steps as steps

    return steps


def finn_paths() -> dict[str, Path]:
    """The folders FINN's settings resolve: its RTL library, its HLS sources, its dependencies and
    the folder its XSI bridge is built in."""
    from finn.util.settings import get_settings

    settings = get_settings()
    return {"FINN_RTLLIB": Path(settings.finn_rtllib), "FINN_CUSTOM_HLS": Path(settings.finn_custom_hls),
            "FINN_DEPS": Path(settings.finn_deps), "FINN_XSI": Path(settings.finn_xsi)}


def prepare_vivado_env() -> dict[str, str]:
    """Set the environment FINN's ``prepare_finn`` sets before the Vivado steps; returns what it set.

    Without FINN_RTLLIB Vivado stops on the first stitched IP (FIFO sizing included); without
    FINN_CUSTOM_HLS every HLS Tcl script fails; without the library path XSim's kernel does not load.
    """
    from finn.interface.run_finn import prepend_ld_library_paths, xilinx_ld_library_paths

    paths = finn_paths()
    values = {name: str(paths[name]) for name in ("FINN_RTLLIB", "FINN_CUSTOM_HLS", "FINN_DEPS")}
    os.environ.update(values)
    # a user's own setting wins, as in FINN's CLI (it only warns about values other than "no")
    os.environ.setdefault("XILINX_LOCAL_USER_DATA", "no")
    if "PLATFORM_REPO_PATHS" not in os.environ and DEFAULT_PLATFORM_REPO.is_dir():
        os.environ["PLATFORM_REPO_PATHS"] = str(DEFAULT_PLATFORM_REPO)
    prepend_ld_library_paths(xilinx_ld_library_paths())
    names = [*values, "XILINX_LOCAL_USER_DATA", "PLATFORM_REPO_PATHS", "LD_LIBRARY_PATH"]
    return {name: os.environ[name] for name in names if name in os.environ}


def reexec_argv(argv: list[str]) -> list[str] | None:
    """The command line to restart this process with, if the Xilinx libraries are missing from the
    library path it started with (None otherwise).

    The dynamic loader reads LD_LIBRARY_PATH once, at start-up, and FINN's XSI bridge loads XSim's
    kernel *inside* the Python process, so setting the variable later only helps subprocesses; FINN's
    CLI restarts itself for the same reason (run_finn.ensure_ld_library_path). ``argv`` are agq's
    arguments; the restart runs ``python -m agq.cli`` with them and FINN's marker against a loop.
    """
    from finn.interface.run_finn import xilinx_ld_library_paths

    wanted = xilinx_ld_library_paths()
    present = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    if not wanted or all(p in present for p in wanted) or os.environ.get(LD_REEXEC_MARKER) == "1":
        return None
    return [sys.executable, "-m", "agq.cli", *argv]


def restart_with_xilinx_libraries(argv: list[str]) -> None:
    """Replace this process by one whose loader sees Vivado's libraries (no-op when it already does)."""
    from finn.interface.run_finn import prepend_ld_library_paths, xilinx_ld_library_paths

    command = reexec_argv(argv)
    if command is None:
        return
    prepend_ld_library_paths(xilinx_ld_library_paths())
    os.environ[LD_REEXEC_MARKER] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, os.environ)
