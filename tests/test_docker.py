"""docker/: the scripts pass shellcheck, the Dockerfile passes hadolint and follows FINN's conventions
(dependencies fetched into the image, the venv layer before agq's code), and (with a stand-in `docker`
that records its arguments, since no Docker engine runs here) run.sh runs as the host user with the
project at its own path, shared memory for FIFO sizing, the host's Xilinx tools read-only, the licence
passed through and `make bitstream`; entrypoint.sh sources the tools. No image is built here: that
needs a Docker engine and the internet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parent.parent / "docker"
BIN = Path(sys.executable).parent


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_shell_scripts_pass_shellcheck():
    result = run([str(BIN / "shellcheck"), str(DOCKER / "run.sh"), str(DOCKER / "entrypoint.sh")],
                 env=dict(os.environ))
    assert result.returncode == 0, result.stdout


def test_dockerfile_passes_hadolint():
    result = run([str(BIN / "hadolint"), str(DOCKER / "Dockerfile")], env=dict(os.environ))
    assert result.returncode == 0, result.stdout


@pytest.fixture
def fake_docker(tmp_path):
    """A `docker` on PATH that appends its arguments, one per line, to a log file."""
    bindir, log = tmp_path / "bin", tmp_path / "docker.log"
    bindir.mkdir()
    script = bindir / "docker"
    script.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> {log}\necho ---- >> {log}\n')
    script.chmod(0o755)
    return bindir, log


def test_run_script_mounts_vivado_read_only_and_passes_licence(fake_docker, tmp_path):
    bindir, log = fake_docker
    xilinx, licence = tmp_path / "Xilinx", tmp_path / "Xilinx.lic"
    xilinx.mkdir()
    licence.write_text("licence")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "FINN_XILINX_PATH": str(xilinx),
           "FINN_XILINX_VERSION": "2022.2", "XILINXD_LICENSE_FILE": str(licence),
           "LM_LICENSE_FILE": "2100@licence-server"}
    result = run(["bash", str(DOCKER / "run.sh")], env=env)
    assert result.returncode == 0, result.stderr
    build, docker_run = log.read_text().split("----\n")[:2]
    assert build.splitlines()[0] == "build" and str(DOCKER / "Dockerfile") in build.splitlines()
    args = docker_run.splitlines()
    assert args[0] == "run"
    repo = str(DOCKER.parent)
    assert f"{xilinx}:{xilinx}:ro" in args
    assert args[args.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert {"/etc/passwd:/etc/passwd:ro", "/etc/group:/etc/group:ro", f"{repo}:{repo}"} <= set(args)
    assert args[args.index("--workdir") + 1] == repo and args[args.index("--shm-size") + 1] == "8g"
    assert f"{licence}:{licence}:ro" in args
    assert {"FINN_XILINX_PATH=" + str(xilinx), "FINN_XILINX_VERSION=2022.2",
            "XILINXD_LICENSE_FILE=" + str(licence), "LM_LICENSE_FILE=2100@licence-server"} <= set(args)
    assert args[-2:] == ["make", "bitstream"]


def test_dockerfile_layers_reuse_the_venv_and_fetch_finns_dependencies():
    lines = [line.strip() for line in (DOCKER / "Dockerfile").read_text().splitlines()]
    text = "\n".join(lines)
    copy_all = lines.index("COPY . .")
    venv = next(i for i, line in enumerate(lines) if line.startswith("RUN python -m venv"))
    deps = next(i for i, line in enumerate(lines) if "agq.cli deps" in line)
    assert venv < deps < copy_all  # a change to agq's code reuses both layers
    assert "COPY requirements/ requirements/" in lines[:venv]
    assert "libboost-program-options-dev" in text and "FINN_DEPS=/opt/finn_deps" in text
    assert "chmod -R a+rwX .venv/lib/python3.11/site-packages/finn_xsi" in text  # FINN builds XSI there


def test_run_script_requires_the_xilinx_settings(fake_docker, tmp_path):
    bindir, log = fake_docker
    result = run(["bash", str(DOCKER / "run.sh")], env={"PATH": f"{bindir}:/usr/bin:/bin"})
    assert result.returncode != 0 and "FINN_XILINX_PATH" in result.stderr
    assert not log.exists()


def test_entrypoint_sources_vivado_and_hls_settings(tmp_path):
    xilinx = tmp_path / "Xilinx"
    for tool, var in (("Vivado", "XILINX_VIVADO"), ("Vitis", "XILINX_HLS")):  # 2024.x layout: HLS in Vitis
        settings = xilinx / tool / "2024.2" / "settings64.sh"
        settings.parent.mkdir(parents=True)
        settings.write_text(f"export {var}={settings.parent}\n")
    env = {"PATH": "/usr/bin:/bin", "FINN_XILINX_PATH": str(xilinx), "FINN_XILINX_VERSION": "2024.2"}
    result = run(["bash", str(DOCKER / "entrypoint.sh"), "env"], env=env)
    assert result.returncode == 0, result.stderr
    assert f"XILINX_VIVADO={xilinx}/Vivado/2024.2" in result.stdout.splitlines()
    assert f"XILINX_HLS={xilinx}/Vitis/2024.2" in result.stdout.splitlines()
    env["FINN_XILINX_VERSION"] = "2022.2"
    result = run(["bash", str(DOCKER / "entrypoint.sh"), "env"], env=env)
    assert result.returncode == 2 and "Vivado/2022.2/settings64.sh not found" in result.stderr
