"""FINN's external dependencies: fetching them into $FINN_DEPS the way ``finn deps update`` does.

The Vivado steps read files FINN does not ship in its wheel: finn-hlslib (the Zynq and Alveo shells'
IODMAs include its dma.h), the nlohmann/json sources (FIFO sizing compiles FINN's simulation
backend with them) and the board files of the PYNQ boards Vivado does not know. FINN lists them,
with their URLs and pinned commits, in ``finn/interface/external_dependencies.yaml`` and installs them
with its ``DependencyUpdater`` (git clone + checkout, wget + unpack). agq calls that same updater
with the same definitions file, so the sources and commits are FINN's, never a second copy.
"""

from __future__ import annotations

import io
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from agq.errors import AgqError

# git's own wait for a dependency, FINN's default (settings.deps_git_timeout)
GIT_TIMEOUT_S = 100


def definitions_file() -> Path:
    """FINN's dependency definitions (``FINN_DEPS_DEFINITIONS`` overrides it, as in FINN)."""
    from finn.util.settings import get_settings

    return Path(get_settings().finn_deps_definitions)


def fetch(deps_dir: Path | None = None, definitions: Path | None = None) -> list[str]:
    """Install or update every outdated FINN dependency into ``deps_dir`` (default: FINN's $FINN_DEPS);
    returns the names that were outdated. Raises AgqError naming each one that could not be fetched."""
    from finn.interface.manage_deps import DependencyUpdater
    from finn.util.exception import FINNUserError
    from finn.util.settings import get_settings

    settings = get_settings()
    target = Path(deps_dir) if deps_dir is not None else Path(settings.finn_deps)
    source = Path(definitions) if definitions is not None else definitions_file()
    if not source.is_file():
        raise AgqError(f"FINN dependency definitions not found: {source}")
    missing_tools = [t for t in ("git", "wget", "unzip") if shutil.which(t) is None]
    if missing_tools:
        raise AgqError(f"fetching FINN's dependencies needs {', '.join(missing_tools)} on PATH")
    chatter = io.StringIO()
    try:
        with redirect_stdout(chatter), redirect_stderr(chatter):
            updater = DependencyUpdater(target, source, GIT_TIMEOUT_S, non_interactive=True)
            outdated = updater.get_outdated_dependencies()
            updater.update()  # FINN exits with status 1 when one of them fails
    except FINNUserError as exc:
        raise AgqError(f"FINN dependency definitions {source}: {str(exc).splitlines()[0]}") from None
    except SystemExit:
        still = updater.get_outdated_dependencies()
        raise AgqError(
            f"could not fetch FINN dependencies into {target}: {', '.join(still)} "
            f"(sources in {source}; no network, or a wrong URL/commit)"
        ) from None
    return outdated
