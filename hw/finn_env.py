"""The only place in agq that knows what finn-plus 1.6.1 needs to run as a library, without its CLI.

FINN is normally started by its ``finn`` command, which writes a settings file, exports FINN_BUILD_DIR
and checks for Vivado's XSim before any build step is imported. agq drives FINN's build steps
directly, so it does the parts of that start-up the steps rely on, and nothing else:

* FINN_BUILD_DIR (where FINN writes generated code) and FINN_SETTINGS point into the build folder,
  so a build never reads or writes ~/.finn and every generated file lives under build/<model>/<board>/;
* ``finn.builder.build_dataflow_steps`` imports ``finn.xsi.SimEngine`` at module level, which demands
  XILINX_VIVADO. Without Vivado that name is bound to None first: no step agq runs without Vivado
  simulates with XSim. With Vivado on PATH FINN's own XSim set-up runs unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

FINN_TMP = "finn_tmp"
# prefix of the per-layer folders FINN's PrepareIP creates in FINN_BUILD_DIR
CODEGEN_PREFIX = "code_gen_ipgen_"
SETTINGS_FILE = "finn_settings.yaml"


def use_build_dir(build_dir: Path) -> Path:
    """Send FINN's generated code to ``build_dir/finn_tmp`` (also for later builds in this process)."""
    from finn.util.settings import get_settings

    tmp = (build_dir / FINN_TMP).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(tmp)
    os.environ["FINN_SETTINGS"] = str((build_dir / SETTINGS_FILE).resolve())
    get_settings().finn_build_dir = tmp
    return tmp


def finn_steps(vivado: bool) -> ModuleType:
    """``finn.builder.build_dataflow_steps``, importable with or without Vivado's XSim."""
    import finn.xsi

    if not vivado and "SimEngine" not in vars(finn.xsi):
        finn.xsi.SimEngine = None
    import finn.builder.build_dataflow_steps as steps

    return steps


def codegen_dirs(model: object) -> set[Path]:
    """The generated-code folders a (qonnx ModelWrapper) model's layers point at."""
    dirs = set()
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "code_gen_dir_ipgen" and attr.s:
                dirs.add(Path(attr.s.decode()).resolve())
    return dirs


def prune_generated_code(build_dir: Path, keep: set[Path]) -> int:
    """Delete per-layer code folders of earlier runs that no current model uses; returns how many."""
    stale = [d for d in (build_dir / FINN_TMP).glob(CODEGEN_PREFIX + "*") if d.resolve() not in keep]
    for folder in stale:
        shutil.rmtree(folder)
    return len(stale)
