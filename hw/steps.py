"""agq's build: FINN's own build steps plus the few agq adds, all in FINN's ``step_x(model, cfg)`` style.

Import only after :func:`hw.finn_env.finn_steps` (FINN's step module needs its environment).
:func:`build_steps` is the no-Vivado build in order; :func:`hw.vivado.vivado_steps` continues it.
agq's steps write their results next to FINN's reports in ``<build>/report/``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import finn.builder.build_dataflow_steps as finn
from agq.hw import estimates
from agq.hw.boards import resolve_board
from agq.hw.certificate import SDP, certificate, require_integer_only
from agq.hw.max_fps import searched_target, step_max_fps_folding
from agq.hw.rtl_check import non_rtl_layers, require_all_rtl, require_mapped
from agq.hw.transforms import PreferRTL, ReturnOutputScaleToHost
from finn.builder.build_dataflow_config import AutoFIFOSizingMethod, DataflowBuildConfig
from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from agq.errors import AgqError
from agq.io import atomic_write_bytes

PARTITION_HDL = "partition_hdl.onnx"
PARENT = "parent.onnx"
CERTIFICATE = "integer_certificate.json"
ESTIMATES = "agq_estimates.json"


@dataclass
class AgqBuildConfig(DataflowBuildConfig):
    """FINN's build config plus agq's budget (largest share of any board resource to use), the depth
    of the FIFOs between layers of the simulation partition, whether the frame-rate target is the
    highest that fits (``target_fps`` is then chosen by :mod:`hw.max_fps`), and whether a layer without
    an RTL implementation stops the build (``all_rtl``, agq's own models) or is only listed in the
    report, with its HLS sources generated (models agq did not train)."""

    max_utilization: float = 0.8
    fifo_depth: int = 32
    max_fps: bool = False
    all_rtl: bool = True


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2).encode())


def _save_model(model: ModelWrapper, path: Path) -> None:
    atomic_write_bytes(path, model.model.SerializeToString())


def _certify(partition: ModelWrapper, parent: ModelWrapper, cfg: DataflowBuildConfig) -> None:
    """Write the integer-only certificate into the report folder, then fail if it lists a float op."""
    cert = certificate(partition, parent)
    _write_json(cfg.get_report_directory() / CERTIFICATE, cert)
    require_integer_only(cert)


def _parent(cfg: DataflowBuildConfig) -> ModelWrapper:
    """The parent model FINN's step_create_dataflow_partition saved (host nodes + partition node)."""
    return ModelWrapper(str(cfg.get_intermediate_models_directory() / "dataflow_parent.onnx"))


def step_round_thresholds(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Round and clip every threshold on an integer input right after streamlining, as FINN's own
    end-to-end examples do. FINN's builder does it only after step_minimize_bit_width_initial, whose
    Thresholding check asserts non-negative thresholds for an unsigned input: the thresholds of a signed
    input quantizer absorbed onto uint8 pixels (a model with a float input) are below 0 until clipped."""
    return model.transform(RoundAndClipThresholds())


def step_output_scale_to_host(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Keep the final float logit scale on the host instead of an HLS ElementwiseMul in the partition."""
    return model.transform(ReturnOutputScaleToHost())


def step_check_mapped(model: ModelWrapper, cfg: AgqBuildConfig) -> ModelWrapper:
    """Stop before partitioning if a plain ONNX node sits between hardware layers or (``cfg.all_rtl``)
    a pooling layer is left, saying why and how to avoid it (FINN's own partitioning error names only
    the node)."""
    require_mapped(model, allow_hls=not cfg.all_rtl)
    return model


def step_integer_certificate(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """List every partition node with its datatypes; fail if any float operation is left inside."""
    _certify(model, _parent(cfg), cfg)
    return model


def step_prefer_rtl(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
    """Ask for the RTL variant of every layer before FINN's step_specialize_layers."""
    return model.transform(PreferRTL())


def step_all_rtl_check(model: ModelWrapper, cfg: AgqBuildConfig) -> ModelWrapper:
    """With ``cfg.all_rtl``, stop the build if any layer was specialised to HLS, naming the layer, the
    reason and the fix; otherwise the build goes on and its report lists those layers."""
    if cfg.all_rtl:
        require_all_rtl(model, cfg._resolve_fpga_part())
    return model


def step_check_budget(model: ModelWrapper, cfg: AgqBuildConfig) -> ModelWrapper:
    """Join FINN's estimate reports, add the board share, fail if the target or the board is missed."""
    target = searched_target(cfg) if cfg.max_fps else cfg.target_fps
    est = estimates.collect(cfg.get_report_directory(), resolve_board(cfg.board), cfg.synth_clk_period_ns,
                            target)
    _write_json(cfg.get_report_directory() / ESTIMATES, est)
    estimates.check_budget(est, cfg.max_utilization)
    return model


def step_rtlsim_partition(model: ModelWrapper, cfg: AgqBuildConfig) -> ModelWrapper:
    """Write the stitchable partition ``partition_hdl.onnx`` (all-RTL unless ``cfg.all_rtl`` is off)
    and its ``parent.onnx``.

    FINN's step_set_fifo_depths with the force_minimal_fifos strategy (no simulation, so no Vivado)
    adds the width converters and FIFOs, specialises them and generates their HDL, so a simulator can
    stitch the partition. The FIFOs get the layers' own depth requests, at least ``cfg.fifo_depth``.
    The model passed on is the unchanged input, from which the Vivado steps insert their own FIFOs,
    sized by FINN's XSim-based simulation. A partition with HLS layers (allowed without ``cfg.all_rtl``)
    is saved without FIFOs: FINN's FIFO step synthesizes HLS layers, which needs Vitis HLS.
    """
    minimal = dataclasses.replace(cfg, auto_fifo_depths=True,
                                  auto_fifo_strategy=AutoFIFOSizingMethod.FORCE_MINIMAL_FIFOS)
    hdl = copy.deepcopy(model)
    for node in hdl.graph.node:
        inst = getCustomOp(node)
        for attr in ("inFIFODepths", "outFIFODepths"):
            inst.set_nodeattr(attr, [max(d, cfg.fifo_depth) for d in inst.get_nodeattr(attr)])
    if cfg.all_rtl:
        hdl = finn.step_set_fifo_depths(hdl, minimal)
        require_all_rtl(hdl, cfg._resolve_fpga_part())
    elif not non_rtl_layers(hdl, cfg._resolve_fpga_part()):
        hdl = finn.step_set_fifo_depths(hdl, minimal)
    # else: FINN's FIFO step ends in HLS synthesis (Vitis) for the HLS layers; the partition is kept
    # as generated, HLS sources included, and report.json lists the layers that keep it from Verilator
    out = Path(cfg.output_dir)
    _save_model(hdl, out / PARTITION_HDL)
    parent = _parent(cfg)
    sdp = parent.get_nodes_by_op_type(SDP)
    if len(sdp) != 1:
        raise AgqError(f"expected one dataflow partition, FINN made {len(sdp)}")
    getCustomOp(sdp[0]).set_nodeattr("model", str((out / PARTITION_HDL).resolve()))
    _save_model(parent, out / PARENT)
    _certify(hdl, parent, cfg)
    return model


def _verified(step: object, verification: str) -> object:
    """``step`` after deleting FINN's verification files of an earlier run of it (FINN names them
    ``verify_<verification>_<image>_<SUCCESS|FAIL>.npy``, so a stale SUCCESS would survive a FAIL)."""

    @functools.wraps(step)
    def run(model: ModelWrapper, cfg: DataflowBuildConfig) -> ModelWrapper:
        for file in cfg.get_verification_output_directory().glob(f"verify_{verification}_*"):
            file.unlink()
        return step(model, cfg)

    return run


def build_steps(max_fps: bool) -> list:
    """The build without Vivado, in order: FINN's steps (by their names in FINN) and agq's; with
    ``max_fps`` agq's search replaces FINN's fixed-target folding step."""
    fixed = finn.step_target_fps_parallelization
    return [step_max_fps_folding if max_fps and step is fixed else step for step in BUILD_STEPS]


# The build without Vivado at a fixed frame-rate target.
BUILD_STEPS = [
    _verified(finn.step_qonnx_to_finn, "finn_onnx_python"),
    _verified(finn.step_tidy_up, "initial_python"),
    _verified(finn.step_streamline, "streamlined_python"),
    step_round_thresholds,
    finn.step_convert_to_hw,
    step_output_scale_to_host,
    step_check_mapped,
    finn.step_minimize_bit_width_initial,
    finn.step_create_dataflow_partition,
    step_integer_certificate,
    step_prefer_rtl,
    finn.step_specialize_layers,
    step_all_rtl_check,
    finn.step_target_fps_parallelization,
    finn.step_apply_folding_config,
    finn.step_minimize_bit_width,
    finn.step_generate_estimate_reports,
    step_check_budget,
    finn.step_hw_codegen,
    step_rtlsim_partition,
]
