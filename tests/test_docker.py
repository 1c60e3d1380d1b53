"""docker/: the scripts pass shellcheck, the Dockerfile passes hadolint, and (with a stand-in `docker`
that records its arguments, since no Docker engine runs here) run.sh mounts the host's Xilinx tools
read-only, passes the licence through and runs `make bitstream`; entrypoint.sh sources the tools."""

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
    assert f"{xilinx}:{xilinx}:ro" in args
    assert f"{licence}:{licence}:ro" in args
    assert {"FINN_XILINX_PATH=" + str(xilinx), "FINN_XILINX_VERSION=2022.2",
            "XILINXD_LICENSE_FILE=" + str(licence), "LM_LICENSE_FILE=2100@licence-server"} <= set(args)
    assert args[-2:] == ["make", "bitstream"]


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
