"""The Vivado half of agq build, run through FINN's own Python code with the fake-Vivado harness.

No Xilinx tool exists here: tests/fake_vivado.py puts stand-in `vivado` and `vitis_hls` on PATH that
record every call and check every file its Tcl reads (tests/fake_xilinx/fake_tool.py says what that
cannot prove: that Vivado accepts the Tcl, synthesis and timing, any real number or bitstream). FIFO
sizing by XSim simulation cannot run with stand-ins (it compiles FINN's XSI bridge against Vivado's
headers); the full build therefore takes its FIFO depths from a file, FINN's other documented path,
and the simulation path is tested up to the XSI bridge, where it stops with one line.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from agq.hw.boards import resolve_board
from agq.hw.build import build_accelerator
from agq.hw.config import HwConfig

from agq.cli import main
from agq.errors import AgqError
from tests import fake_vivado
from tests.test_hw_build import Tiny, export

GATED = ["step_hw_ipgen", "step_set_fifo_depths", "step_create_stitched_ip", "step_prepare_synthesis",
         "step_synthesize_bitfile", "step_make_driver", "step_deployment_package", "step_deploy_host_side"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return export(Tiny(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def fifo_file(tiny_model, tmp_path_factory):
    """FINN's FIFO-depth file of the no-Vivado build (the depths agq's RTL check simulates)."""
    build_dir = build_accelerator(tiny_model, allow_missing_vivado=True, progress=False)
    target = tmp_path_factory.mktemp("fifos") / "fifo_sizing.json"
    shutil.copy(build_dir / "report" / "fifo_sizing.json", target)
    return target


@pytest.fixture(scope="module")
def fake_env(tmp_path_factory):
    """The environment after sourcing the stand-in Vivado's settings, set for the whole module."""
    env = fake_vivado.install(tmp_path_factory.mktemp("xilinx"))
    saved = {k: os.environ.get(k) for k in (*env, "XILINX_LOCAL_USER_DATA", "FINN_RTLLIB", "FINN_CUSTOM_HLS")}
    os.environ.update(env)
    # FINN waits 50 ms per generated file for it to settle (network file systems); nothing settles here
    import finn.transformation.fpgadataflow.create_stitched_ip as stitch

    wait = stitch.wait_for_file
    stitch.wait_for_file = functools.partial(wait, stable_for=0.0)
    yield env
    stitch.wait_for_file = wait
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def fake_build(tiny_model, fifo_file, fake_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("vivado") / "Pynq-Z2"
    build_dir = build_accelerator(tiny_model, out_dir=out, config=HwConfig(fifo_config=str(fifo_file)),
                                  progress=False)
    return build_dir, json.loads((build_dir / "report.json").read_text()), fake_vivado.calls(fake_env)


def _folders(model_file: Path) -> set[Path]:
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(model_file))
    return {Path(a.s.decode()) for n in model.graph.node for a in n.attribute
            if a.name == "code_gen_dir_ipgen"}


def test_pynq_z2_build_runs_every_gated_step_through_finn(fake_build):
    build_dir, report, calls = fake_build
    assert report["status"] == "complete" and report["vivado"]["missing"] == []
    names = [s["name"] for s in report["steps"]]
    assert names[-len(GATED):] == GATED
    tools = [c["tool"] for c in calls]
    # stitched IP, per kernel (input DMA, accelerator, output DMA) HLS + stitched IP, then the Zynq project
    assert tools.count("vitis_hls") == 2 and tools.count("vivado") == 5, tools
    assert calls[-1]["script"].endswith("ip_config.tcl")
    for call in calls:
        assert call["missing"] == [] and call["checked"] > 0, call
    hls = [c for c in calls if c["tool"] == "vitis_hls"]
    assert all(c["checked"] >= 3 for c in hls)  # the cpp, its -I folders and its includes were checked
    assert (build_dir / "stitched_ip" / "all_verilog_srcs.txt").is_file()
    assert (build_dir / "report" / "post_route_timing.rpt").read_text().startswith("agq fake-Vivado stand-in")


def test_every_finn_environment_variable_reaches_the_tools(fake_build, fake_env):
    from finn.util.settings import get_settings

    _, report, calls = fake_build
    settings = get_settings()
    expected = {"FINN_RTLLIB": settings.finn_rtllib, "FINN_CUSTOM_HLS": settings.finn_custom_hls,
                "FINN_DEPS": fake_env["FINN_DEPS"], "XILINX_LOCAL_USER_DATA": "no"}
    for call in calls:
        assert {k: call["env"][k] for k in expected} == expected, call["script"]
        assert f"{fake_env['XILINX_VIVADO']}/lib/lnx64.o" in call["env"]["LD_LIBRARY_PATH"].split(os.pathsep)
        assert call["env"]["FINN_BUILD_DIR"] == str(Path(report["paths"]["hdl"]))
    assert report["vivado"]["env"]["FINN_RTLLIB"] == settings.finn_rtllib


def test_deployment_folder_holds_bitfile_driver_settings_host_side_and_script(fake_build):
    build_dir, report, _ = fake_build
    deploy = build_dir / "deploy"
    for name in ("bitfile/finn-accel.bit", "bitfile/finn-accel.hwh", "driver/settings.json", "host.json",
                 "run_on_board.py", "README.md"):
        assert (deploy / name).is_file(), name
    host = json.loads((deploy / "host.json").read_text())
    assert host["input_transposes"] == [[0, 2, 3, 1]] and host["input_shape"] == [1, 1, 28, 28]
    assert host["output_scale"] == report["output_scale"]
    settings = json.loads((deploy / "driver" / "settings.json").read_text())["driver_information"]
    assert settings["driver_type"] == "FINNDMAOverlay" and settings["platform"] == "zynq-iodma"
    assert "pip install finn-plus-driver==1.6.1" in (deploy / "README.md").read_text()
    script = (deploy / "run_on_board.py").read_text()
    assert "from finn_plus_driver import get_driver_class" in script and "accuracy" in script
    compile(script, "run_on_board.py", "exec")  # runs on the board (needs pynq): here it must parse


def test_pruning_keeps_what_kernel_partitions_and_the_vivado_project_reference(fake_build, tiny_model,
                                                                               fifo_file):
    build_dir, report, _ = fake_build
    finn_tmp = build_dir / "finn_tmp"
    kernels = sorted((build_dir / "intermediate_models" / "kernel_partitions").glob("*.onnx"))
    kernel_dirs = set().union(*(_folders(k) for k in kernels))
    top_dirs = _folders(build_dir / "intermediate_models" / report["steps"][-1]["file"])
    assert kernel_dirs - top_dirs, "the kernels hold folders no top-level node names (FIFOs, DWCs, IODMAs)"
    stale = finn_tmp / "code_gen_ipgen_stale_layer_x"
    stale.mkdir()
    build_accelerator(tiny_model, out_dir=build_dir, config=HwConfig(fifo_config=str(fifo_file)),
                      progress=False)
    assert not stale.exists()
    assert all(d.is_dir() for d in kernel_dirs)
    for listing in finn_tmp.glob("vivado_stitch_proj_*/all_verilog_srcs.txt"):
        assert all(Path(f).is_file() for f in listing.read_text().split()), listing
    assert any(finn_tmp.glob("vivado_zynq_proj_*/finn_zynq_link.xpr"))


def test_report_md_has_per_layer_table_totals_and_folding_copy(fake_build):
    build_dir, _, _ = fake_build
    text = (build_dir / "report.md").read_text()
    assert "| layer | LUT | FF | BRAM18 | URAM | DSP | cycles | PE | SIMD |" in text
    assert "| MVAU_rtl_0 |" in text and "| DSP |" in text and "Pynq-Z2" in text
    assert "folding_config: folding_config.json" in text
    assert (build_dir / "folding_config.json").read_bytes() == \
        (build_dir / "report" / "auto_folding_config.json").read_bytes()
    assert "Vivado post-synthesis" not in text  # the stand-in report table has no rows: no numbers shown


def test_missing_dependency_stops_with_one_line_naming_it(tiny_model, fifo_file, fake_env, tmp_path, capsys,
                                                          monkeypatch):
    before = len(fake_vivado.calls(fake_env))
    deps = fake_vivado.install_deps(tmp_path / "deps", board_files=())
    shutil.rmtree(deps / "finn-hlslib")
    monkeypatch.setenv("FINN_DEPS", str(deps))
    config = tmp_path / "hw.yaml"
    config.write_text(f"fifo_config: {fifo_file}\n")
    code = main(["build", "--model", str(tiny_model), "--out", str(tmp_path / "b"), "--config", str(config),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len([line for line in err if line.startswith("agq build: error")]) == 1
    message = err[-1]
    assert f"{deps}/finn-hlslib/dma.h" in message and f"{deps}/board_files/pynq-z2" in message
    assert "vivado (" not in message  # the tools themselves are there
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["status"] == "no_vivado" and len(report["vivado"]["missing"]) == 2, report["vivado"]
    assert len(fake_vivado.calls(fake_env)) == before  # no tool was started


def test_requirements_follow_board_and_platform(fake_env, monkeypatch):
    from agq.hw import finn_env, vivado

    finn_env.use_build_dir(Path(fake_env["FINN_DEPS"]).parent / "settings")
    assert vivado.board_file_name("Pynq-Z2") == "pynq-z2"
    assert vivado.board_file_name("KV260_SOM") == "kv260_som"
    simulated = [r.what for r in vivado.requirements(resolve_board("Pynq-Z2"), HwConfig())]
    assert any("nlohmann_json/json/CMakeLists.txt" in w for w in simulated)
    assert any("xsi.h" in w for w in simulated) and any("Boost" in w for w in simulated)
    alveo_reqs = vivado.requirements(resolve_board("U250"), HwConfig(fifo_config="x"))
    alveo = {r.what.split()[0]: r.ok for r in alveo_reqs}
    assert {"v++", "XILINX_VITIS", "XILINX_XRT", "platform"} <= set(alveo) and not alveo["v++"]
    versal = resolve_board("VEK280")
    assert versal.shell == ""
    assert not any("hlslib" in r.what or "board files" in r.what
                   for r in vivado.requirements(versal, HwConfig(fifo_config="x")))
    import finn.builder.build_dataflow_steps as finn

    steps = [s.__name__ for s in vivado.vivado_steps(finn, versal, HwConfig(fifo_config="x", ooc_synth=True))]
    assert steps == ["step_hw_ipgen", "step_set_fifo_depths", "step_create_stitched_ip",
                     "step_out_of_context_synthesis"]
    monkeypatch.setenv("XILINX_VIVADO", "/opt/Xilinx/Vivado/2025.1")
    assert any(r.what == "vitis-run" for r in vivado.requirements(resolve_board("Pynq-Z2"), HwConfig()))


def test_environment_and_restart_for_xsim_libraries(fake_env, monkeypatch):
    from agq.hw import finn_env

    values = finn_env.prepare_vivado_env()
    assert Path(values["FINN_RTLLIB"], "memstream").is_dir() and Path(values["FINN_CUSTOM_HLS"]).is_dir()
    assert values["XILINX_LOCAL_USER_DATA"] == "no" and values["FINN_DEPS"] == fake_env["FINN_DEPS"]
    assert finn_env.reexec_argv(["build"]) is None  # the loader already sees Vivado's libraries
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    assert finn_env.reexec_argv(["build", "--model", "m.onnx"]) == [sys.executable, "-m", "agq.cli", "build",
                                                                    "--model", "m.onnx"]
    monkeypatch.setenv(finn_env.LD_REEXEC_MARKER, "1")
    assert finn_env.reexec_argv(["build"]) is None  # restarted once already: no loop


def test_xsi_bridge_failure_is_one_line_inside_the_runner(fake_build, fake_env, tmp_path):
    from agq.hw.runner import StepRunner
    from agq.hw.vivado import step_prepare_xsi
    from qonnx.core.modelwrapper import ModelWrapper

    build_dir, _, _ = fake_build
    with (tmp_path / "build.log").open("w") as log:
        runner = StepRunner(tmp_path, cfg=None, base_key="k", log=log, progress=False)
        with pytest.raises(AgqError) as err:
            runner.run([step_prepare_xsi], ModelWrapper(str(build_dir / "parent.onnx")))
    message = str(err.value)
    vivado_dir = fake_env["XILINX_VIVADO"]
    assert message.startswith(f"FINN's XSI bridge is not available for XILINX_VIVADO={vivado_dir}")
    assert "\n" not in message and "fifo_config" in message


def test_simulated_fifo_sizing_reaches_vivado_per_layer_then_stops_at_xsi(fake_build, fake_env, tmp_path):
    """FINN's own FIFO sizing (distributed simulation): every layer's stitched IP goes through the stand-in
    Vivado with FINN_RTLLIB set, then FINN needs its XSI bridge, which only a real Vivado can build."""
    import finn.builder.build_dataflow_steps as finn
    from agq.hw.steps import AgqBuildConfig
    from finn.util.exception import FINNUserError
    from qonnx.core.modelwrapper import ModelWrapper

    build_dir, report, _ = fake_build
    before = len(fake_vivado.calls(fake_env))
    index = [s["name"] for s in report["steps"]].index("step_hw_ipgen")
    model = ModelWrapper(str(build_dir / "intermediate_models" / report["steps"][index]["file"]))
    cfg = AgqBuildConfig(output_dir=str(tmp_path), board="Pynq-Z2", synth_clk_period_ns=10.0,
                         generate_outputs=[])
    with pytest.raises(FINNUserError, match="XSI not available"):
        finn.step_set_fifo_depths(model, cfg)
    stitched = fake_vivado.calls(fake_env)[before:]
    assert stitched and all(c["missing"] == [] and c["env"]["FINN_RTLLIB"] for c in stitched)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the server's access log would mix into the CLI's stderr
        pass


def _serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def test_deps_command_fetches_with_finns_updater_from_a_local_server(tmp_path, capsys):
    """`agq deps` runs FINN's DependencyUpdater: git clone + checkout of the pinned commit, download and
    unpacking of archives. A local HTTP server stands in for the internet (dumb-HTTP git, plain files)."""
    served = tmp_path / "served"
    work = tmp_path / "hlslib"
    work.mkdir()
    (work / "dma.h").write_text("// dma\n")
    _git("init", "-q", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-qm", "hlslib", cwd=work)
    commit = _git("rev-parse", "HEAD", cwd=work).strip()
    _git("clone", "-q", "--bare", str(work), str(served / "finn-hlslib.git"), cwd=tmp_path)
    _git("update-server-info", cwd=served / "finn-hlslib.git")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "CMakeLists.txt").write_text("# json\n")
    with tarfile.open(served / "json.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "json", arcname="json")
    with zipfile.ZipFile(served / "pynq-z2.zip", "w") as zf:
        zf.writestr("pynq-z2/A.0/board.xml", "<board/>")
    server = _serve(served)
    url = f"http://127.0.0.1:{server.server_port}"
    definitions = tmp_path / "deps.yaml"

    def define(hlslib_commit: str) -> None:
        definitions.write_text(yaml.safe_dump({
            "git_deps": {"finn-hlslib": {"url": f"{url}/finn-hlslib.git", "commit": hlslib_commit,
                                         "pip_install": False, "install_editable": False}},
            "boardfile_deps": {},
            "direct_download_deps": {
                "pynq-z2": {"url": f"{url}/pynq-z2.zip", "do_unzip": True, "target_directory": "board_files"},
                "nlohmann-json": {"url": f"{url}/json.tar.xz", "do_unzip": True,
                                  "target_directory": "nlohmann_json"}}}))

    dest = tmp_path / "finn_deps"
    try:
        define(commit)
        assert main(["deps", "--dest", str(dest), "--definitions", str(definitions)]) == 0
        assert "fetched finn-hlslib, nlohmann-json, pynq-z2" in capsys.readouterr().out
        assert (dest / "finn-hlslib" / "dma.h").is_file()
        assert (dest / "nlohmann_json" / "json" / "CMakeLists.txt").is_file()
        assert (dest / "board_files" / "pynq-z2" / "A.0" / "board.xml").is_file()
        assert main(["deps", "--dest", str(dest), "--definitions", str(definitions)]) == 0
        assert "all up to date" in capsys.readouterr().out
        define("0" * 40)
        assert main(["deps", "--dest", str(dest), "--definitions", str(definitions)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "could not fetch FINN dependencies" in err[0] and "finn-hlslib" in err[0]
    finally:
        server.shutdown()


def test_max_fps_finds_fastest_fitting_folding_and_names_the_binding_resource(tiny_model, tmp_path):
    def build(name: str, **config):
        return build_accelerator(tiny_model, out_dir=tmp_path / name, allow_missing_vivado=True,
                                 progress=False, config=HwConfig(**config))

    fixed, fast = build("fixed", target_fps=1000), build("max", target_fps="max")
    est = json.loads((fast / "report.json").read_text())["estimates"]
    assert est["fps"] > json.loads((fixed / "report.json").read_text())["estimates"]["fps"]
    search = json.loads((fast / "report" / "max_fps_search.json").read_text())
    assert search["binding"].startswith("folding")  # Tiny fits Pynq-Z2 even fully unfolded
    tight = build("tight", target_fps="max", max_utilization=0.05)
    search = json.loads((tight / "report" / "max_fps_search.json").read_text())
    tight_est = json.loads((tight / "report.json").read_text())["estimates"]
    assert all(share <= 0.05 for share in tight_est["board_share"].values())
    failed = [t for t in search["tried"] if t["over"]]
    assert failed and all(t["max_cycles"] < tight_est["max_cycles"] for t in failed)
    assert search["binding"].split()[0] in {"DSP", "BRAM_18K", "LUT"} or "/" in search["binding"].split()[0]
    assert "binding:" in (tight / "report.md").read_text()


def test_out_of_context_synthesis_reaches_vivado_with_the_stitched_project(fake_build, fake_env, tmp_path):
    """FINN's OOC step runs its Tcl on the stitched project; the stand-in writes no reports, so FINN
    stops where real numbers would be read - nothing is invented."""
    import finn.builder.build_dataflow_steps as finn
    from agq.hw.build import finn_config
    from agq.hw.runner import StepRunner
    from qonnx.core.modelwrapper import ModelWrapper

    build_dir, report, _ = fake_build
    stitched = next(s for s in report["steps"] if s["name"] == "step_create_stitched_ip")
    cfg = finn_config(HwConfig(ooc_synth=True), resolve_board("Pynq-Z2"), tmp_path)
    before = len(fake_vivado.calls(fake_env))
    with (tmp_path / "build.log").open("w") as log:
        runner = StepRunner(tmp_path, cfg, base_key="k", log=log, progress=False)
        with pytest.raises(AgqError, match=r"step_out_of_context_synthesis failed: .*did not produce report"):
            runner.run([finn.step_out_of_context_synthesis],
                       ModelWrapper(str(build_dir / "intermediate_models" / stitched["file"])))
    (call,) = fake_vivado.calls(fake_env)[before:]
    assert call["script"].endswith("ooc_pnr.tcl") and call["missing"] == []  # the .xpr it opens exists


def test_edited_folding_file_is_applied_on_rebuild(tiny_model, tmp_path):
    first = build_accelerator(tiny_model, out_dir=tmp_path / "a", allow_missing_vivado=True, progress=False)
    folding = json.loads((first / "folding_config.json").read_text())
    mvau = next(name for name in folding if name.startswith("MVAU"))
    folding[mvau]["PE"] = 1
    edited = tmp_path / "folding.json"
    edited.write_text(json.dumps(folding))
    second = build_accelerator(tiny_model, out_dir=tmp_path / "b", allow_missing_vivado=True, progress=False,
                               config=HwConfig(target_fps=100, folding_config=str(edited)))
    applied = json.loads((second / "report" / "applied_folding_config.json").read_text())
    assert applied[mvau]["PE"] == 1
    assert json.loads((second / "folding_config.json").read_text())[mvau]["PE"] == 1
    lines = (second / "report.md").read_text().splitlines()
    row = next(line for line in lines if line.startswith(f"| {mvau} |"))
    assert row.split("|")[-3].strip() == "1"
