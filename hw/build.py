"""``build_accelerator``: exported QONNX model -> all-RTL, integer-only FINN dataflow accelerator.

Output folder (default ``<model's folder>/<board>``): report.json (steps and times, certificate,
estimates, host-side nodes, paths), report.md (per-layer table, totals against the board) with
folding_config.json beside it, build.log, intermediate_models/, FINN's report/, partition_hdl.onnx +
parent.onnx (the stitchable RTL partition and its host graph) and finn_tmp/ (FINN's generated HDL).
With Vivado and FINN's dependencies present FINN's Vivado steps follow (FIFO sizing, stitched IP,
bitfile, driver settings, deployment package under the same folder).

The build folder is locked for the build (agq.locks): a second build on the same folder stops at once
naming the first. report.json records the sha256 of the partition and its parent graph, which
``agq rtlsim`` checks (hw.report.BuildReport). A model with an agq model card beside it must be the file
the card describes (sha256), otherwise the build stops naming the stale file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import onnx
from agq.export.model_card import MODEL_CARD, card_for
from agq.hw import finn_env, prune, vivado
from agq.hw import report as build_report
from agq.hw.boards import DEFAULT_BOARD, Board, resolve_board
from agq.hw.config import MAX_FPS, HwConfig, load_hw_config
from agq.hw.report import BUILD_LOG, BuildReport

from agq.errors import AgqError
from agq.io import file_sha256, not_a_file, output_errors
from agq.locks import folder_lock

QONNX_OPS = {"Quant", "BipolarQuant", "Trunc"}


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read weights kept in separate files (torch's dynamo exporter writes ``model.onnx.data``), naming
    a file that is not beside the model instead of onnx's bare FileNotFoundError."""
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data

    files = {ExternalDataInfo(t).location for t in proto.graph.initializer if uses_external_data(t)}
    for name in sorted(files):
        if not (path.parent / name).is_file():
            raise AgqError(f"{path}: its weights are in {name} (ONNX external data), which is not beside it; "
                           "copy that file next to the model")
    if files:
        load_external_data_for_model(proto, str(path.parent))


def load_qonnx(path: Path) -> onnx.ModelProto:
    """The exported model, checked to be a QONNX model with an integer input; AgqError otherwise."""
    if not path.is_file():
        raise AgqError(f"model file {not_a_file(path)}: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError... for a non-ONNX file
        raise AgqError(f"{path} is not an ONNX model ({type(exc).__name__}); "
                       "export one with `agq export`") from None
    _load_external_data(proto, path)
    if not proto.graph.node or not any(n.op_type in QONNX_OPS for n in proto.graph.node):
        raise AgqError(f"{path} is not a QONNX model: it has no Quant nodes; export it with `agq export`")
    return proto


def _source_hash() -> str:
    """Hash of agq's build code: a changed step must not reuse results of the old one."""
    digest = hashlib.sha256()
    for file in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()


def base_key(proto: onnx.ModelProto, hw_cfg: HwConfig, board: Board, build_dir: Path, all_rtl: bool,
             verification: bytes = b"") -> str:
    """Cache key of the whole build: input model, config (and its folding and FIFO files), board, build
    folder, whether all-RTL is required, FINN's verification data, code and FINN version."""
    digest = hashlib.sha256(proto.SerializeToString())
    digest.update(hashlib.sha256(verification).digest())
    meta = {"config": hw_cfg.to_dict(), "board": board.name, "dir": str(build_dir.resolve()),
            "code": _source_hash(), "finn": version("finn-plus"), "all_rtl": all_rtl}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for file in (hw_cfg.folding_config, hw_cfg.fifo_config):
        if file:
            digest.update(Path(file).read_bytes())
    return digest.hexdigest()


def is_agq_export(model: Path) -> bool:
    """True if ``model`` is the file `agq export` wrote (its model card beside it names it); a model
    the card names but whose sha256 differs from the card's is one AgqError naming the stale file."""
    return card_for(model) is not None


def finn_config(hw_cfg: HwConfig, board: Board, build_dir: Path, all_rtl: bool = True) -> object:
    """FINN's DataflowBuildConfig (agq's subclass) for this build; ``all_rtl``: a layer without RTL
    stops the build. FINN's Python verification steps check the intermediate models on the build's
    ``input.npy`` / ``expected_output.npy``."""
    from agq.hw import verification
    from agq.hw.steps import AgqBuildConfig
    from finn.builder.build_dataflow_config import DataflowOutputType, ShellFlowType

    outputs = [DataflowOutputType.ESTIMATE_REPORTS, DataflowOutputType.STITCHED_IP]
    if hw_cfg.ooc_synth:
        outputs.append(DataflowOutputType.OOC_SYNTH)
    if board.shell:
        outputs += [DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER,
                    DataflowOutputType.DEPLOYMENT_PACKAGE]
    max_fps = hw_cfg.target_fps == MAX_FPS
    return AgqBuildConfig(
        output_dir=str(build_dir),
        board=board.name,
        shell_flow_type=ShellFlowType(board.shell) if board.shell else None,
        synth_clk_period_ns=hw_cfg.clock_ns,
        target_fps=None if max_fps else hw_cfg.target_fps,
        max_fps=max_fps,
        mvau_wwidth_max=hw_cfg.mvau_wwidth_max,
        folding_config_file=Path(hw_cfg.folding_config) if hw_cfg.folding_config else None,
        auto_fifo_depths=not hw_cfg.fifo_config,
        fifo_config_file=Path(hw_cfg.fifo_config) if hw_cfg.fifo_config else None,
        standalone_thresholds=True,
        save_intermediate_models=True,
        generate_outputs=outputs,
        max_utilization=hw_cfg.max_utilization,
        fifo_depth=hw_cfg.fifo_depth,
        all_rtl=all_rtl,
        verify_steps=verification.verify_steps(),
        verify_input_npy=str(build_dir / verification.INPUT),
        verify_expected_output_npy=str(build_dir / verification.EXPECTED),
        verification_mean_rtol=verification.MEAN_RTOL,
    )


def _paths(build_dir: Path) -> dict[str, str]:
    from agq.hw.steps import PARENT, PARTITION_HDL

    return {
        "partition_hdl": str(build_dir / PARTITION_HDL),
        "parent": str(build_dir / PARENT),
        "build_log": str(build_dir / BUILD_LOG),
        "intermediate_models": str(build_dir / "intermediate_models"),
        "finn_reports": str(build_dir / "report"),
        "hdl": str(build_dir / finn_env.FINN_TMP),
    }


def _partition(build_dir: Path, part: str) -> dict:
    """RTL and HLS layer counts of the simulation partition, and every layer that is not RTL."""
    from agq.hw.rtl_check import non_rtl_layers
    from agq.hw.steps import PARTITION_HDL
    from finn.util.fpgadataflow import is_rtl_node
    from qonnx.core.modelwrapper import ModelWrapper

    partition = ModelWrapper(str(build_dir / PARTITION_HDL))
    non_rtl = non_rtl_layers(partition, part)
    rtl = sum(is_rtl_node(n) for n in partition.graph.node)
    return {"rtl_nodes": rtl, "hls_nodes": len(partition.graph.node) - rtl, "all_rtl": not non_rtl,
            "non_rtl": non_rtl}


def _results(build_dir: Path, part: str) -> dict:
    """The certificate and estimates agq's steps wrote into FINN's report folder, and the partition."""
    from agq.hw.steps import CERTIFICATE, ESTIMATES

    cert = json.loads((build_dir / "report" / CERTIFICATE).read_text())
    return {
        "partition": _partition(build_dir, part),
        "certificate": cert,
        "host_nodes": cert["host"],
        "output_scale": cert["output_scale"],
        "estimates": json.loads((build_dir / "report" / ESTIMATES).read_text()),
    }


def _prune(build_dir: Path, records: list[dict]) -> None:
    """Delete generated folders of earlier runs that no model of this build (the model after every
    step, the partitions they reference, the simulation partition) still points at."""
    from agq.hw.steps import PARENT, PARTITION_HDL

    models = build_dir / "intermediate_models"
    files = [models / r["file"] for r in records] + [build_dir / PARTITION_HDL, build_dir / PARENT]
    finn_tmp = (build_dir / finn_env.FINN_TMP).resolve()
    prune.prune_generated_code(finn_tmp, prune.referenced_paths(files, finn_tmp))


def _say_hls(partition: dict, build_dir: Path) -> None:
    """Name the layers that have only HLS in finn-plus: sources generated, Vitis HLS needed."""
    if partition["non_rtl"]:
        names = ", ".join(f"{n['name']} ({n['op_type']})" for n in partition["non_rtl"])
        print(f"{partition['hls_nodes']} layer(s) have only an HLS implementation in finn-plus: {names}; "
              f"their HLS sources are generated under {build_dir / finn_env.FINN_TMP} (Vitis HLS "
              "synthesizes them); `agq rtlsim` simulates only all-RTL builds")


def build_accelerator(
    model: Path,
    board: str = DEFAULT_BOARD,
    out_dir: Path | None = None,
    allow_missing_vivado: bool = False,
    config: Path | HwConfig | None = None,
    progress: bool = True,
    all_rtl: bool | None = None,
    inputs: Path | None = None,
    expected: Path | None = None,
) -> Path:
    """Build the accelerator for ``model`` on ``board``; returns the build folder.

    Without Vivado the build stops after HDL generation and raises AgqError with exit status 3, or,
    with ``allow_missing_vivado``, prints the same paragraph and returns normally. report.json's
    ``status`` is "complete", "no_vivado" or "failed" (with the error), so a stale report never
    describes a build that has since failed.

    ``all_rtl``: a layer without an RTL implementation stops the build (True) or is listed in the
    report with its HLS sources generated (False); by default True exactly for a model `agq export`
    wrote (agq's contract), False for models agq did not train. ``inputs`` / ``expected`` (.npy) feed
    FINN's verification steps (see :mod:`hw.verification`).
    """
    model = Path(model)
    target = resolve_board(board)
    hw_cfg = config if isinstance(config, HwConfig) else load_hw_config(config)
    proto = load_qonnx(model)
    build_dir = (Path(out_dir) if out_dir is not None else model.parent / target.name).resolve()
    with folder_lock(build_dir, "--out"):
        return _build(model, proto, target, hw_cfg, build_dir, config, allow_missing_vivado, progress,
                      all_rtl, inputs, expected)


def _build(model: Path, proto: onnx.ModelProto, target: Board, hw_cfg: HwConfig, build_dir: Path,
           config: Path | HwConfig | None, allow_missing_vivado: bool, progress: bool, all_rtl: bool | None,
           inputs: Path | None, expected: Path | None) -> Path:
    """:func:`build_accelerator` inside the locked build folder."""
    from agq.hw import verification
    from agq.hw.foreign import prepare_input
    from qonnx.core.modelwrapper import ModelWrapper

    wrapper = prepare_input(ModelWrapper(proto), model, hw_cfg.input_mapping())  # before any file is made
    agq_export = is_agq_export(model)
    x, y, verify_source = verification.verification_pair(
        wrapper, model.parent / MODEL_CARD if agq_export else None, inputs, expected)
    finn_env.use_build_dir(build_dir)
    missing = vivado.missing(target, hw_cfg)
    finn_steps = finn_env.finn_steps()
    from agq.hw import steps
    from agq.hw.runner import StepRunner

    all_rtl = agq_export if all_rtl is None else all_rtl
    cfg = finn_config(hw_cfg, target, build_dir, all_rtl=all_rtl)
    build_steps = steps.build_steps(cfg.max_fps)
    if not missing:
        build_steps += vivado.vivado_steps(finn_steps, target, hw_cfg)
    required = [build_dir / steps.PARTITION_HDL, build_dir / steps.PARENT,
                build_dir / "report" / steps.CERTIFICATE, build_dir / "report" / steps.ESTIMATES]
    report = BuildReport(
        status="failed",
        model=str(model.resolve()),
        model_sha256=file_sha256(model),
        agq_export=agq_export,
        board=target.to_dict(),
        config=hw_cfg.to_dict(),
        finn_version=version("finn-plus"),
        vivado={"missing": missing, "env": {} if missing else finn_env.prepare_vivado_env()},
        paths=_paths(build_dir),
    )
    verification.write_pair(build_dir, x, y)
    start = time.perf_counter()
    with output_errors(build_dir / BUILD_LOG):
        log = (build_dir / BUILD_LOG).open("a")
        print(f"##### agq build {model} --board {target.name} at {time.ctime()}", file=log, flush=True)
    with log:
        key = base_key(proto, hw_cfg, target, build_dir, all_rtl, x.tobytes() + y.tobytes())
        runner = StepRunner(build_dir, cfg, key, log, progress)
        try:
            runner.run(build_steps, wrapper, required)
        except AgqError as exc:
            build_report.write(build_dir, replace(report, error=str(exc), steps=runner.records))
            raise
    _prune(build_dir, runner.records)
    done = replace(
        report,
        status="no_vivado" if missing else "complete",
        build_seconds=round(time.perf_counter() - start, 2),
        steps=runner.records,
        outputs={name: file_sha256(build_dir / name) for name in (steps.PARTITION_HDL, steps.PARENT)},
        **_results(build_dir, target.part),
        finn_verification={"data": verify_source, "steps": verification.results(build_dir)},
    )
    build_report.write(build_dir, done)
    _say_hls(done.partition, build_dir)
    failed = {step: r["failed"] for step, r in done.finn_verification["steps"].items() if r["failed"]}
    if failed:
        print(f"FINN's verification failed on some images (step: images): {failed}; see "
              f"{build_dir / 'verification_output'}")
    if missing:
        command = f"agq build --model {model} --board {target.name} --out {build_dir}"
        if isinstance(config, str | Path):
            command += f" --config {config}"
        elif hw_cfg.input_scale:
            command += f" --input-scale {hw_cfg.input_scale!r} --input-offset {hw_cfg.input_offset!r}"
        paragraph = vivado.stop_paragraph(build_dir, target.name, command, missing)
        if not allow_missing_vivado:
            raise vivado.no_vivado_error(paragraph)
        print(paragraph)
    return build_dir
