"""`pip install .` (not editable) into a clean venv, then a packaged config by name from another folder.

The heavy dependencies (torch, Brevitas, FINN...) are never downloaded: the new venv reads them from this
interpreter's site-packages through a ``.pth`` line. Python does not process ``.pth`` files inside a
folder that a ``.pth`` line adds, so the repository's editable install there cannot leak in: ``agq`` must
resolve to the copy pip installed into the new venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# what the distribution is built from (pyproject's package-dir and package-data)
SOURCES = ["pyproject.toml", "README.md", "agq", "training", "export", "hw", "bench", "configs"]
TINY = ["data.limit_train=256", "train.pretrain_epochs=1", "train.epochs=1", "train.lr_milestones=[1.0]",
        "model.stem_channels=4", "model.widths=[4, 4, 4]", "model.convs_per_block=1", "train.threads=1"]


def run(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_pip_install_then_a_packaged_config_by_name_from_another_folder(tmp_path):
    # a copy of the sources, so that pip's in-tree build leaves nothing (build/, *.egg-info) in the repo
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path, env=env).strip())
    (site / "agq_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-build-isolation",
        "--no-index", "--no-cache-dir", "-q", src, cwd=tmp_path, env=env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run(python, "-c", "import agq, agq.training.config, agq.hw.config, importlib.resources as r; "
                "print(agq.__file__, agq.training.config.__file__, agq.hw.config.DEFAULT_CONFIG, "
                "r.files('agq.configs'))", cwd=work, env=env).split()
    assert all(Path(p).is_relative_to(site / "agq") for p in where), where

    sets = [a for s in [*TINY, f"train.output_dir={work / 'runs'}", f"data.root={work / 'data'}"]
            for a in ("--set", s)]
    out = run(venv / "bin" / "agq", "train", "--config", "mnist_plain_ag", "--no-progress", *sets,
              cwd=work, env=env)
    checkpoint = work / "runs" / "mnist_plain_ag" / "checkpoint.pt"
    assert f"wrote {checkpoint}" in out and checkpoint.is_file()
