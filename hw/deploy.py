"""The deployment folder: what FINN's package holds plus what agq keeps on the host, and a board script.

FINN's step_deployment_package copies ``bitfile/`` (finn-accel.bit, finn-accel.hwh) and ``driver/``
(settings.json, runtime weights) into ``deploy/``; in finn-plus 1.6.1 the driver code itself is the
separate PyPI package ``finn-plus-driver``, installed on the board. The accelerator computes only the
integer partition, so agq adds ``host.json`` (the host-side nodes of parent.onnx: the input layout
change and the logit scale), ``run_on_board.py`` (reads a test set, runs the accelerator through the
driver, applies the host side, prints accuracy and measured frames/s) and a README.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agq.hw.certificate import SDP, output_scale
from qonnx.core.modelwrapper import ModelWrapper

from agq.errors import AgqError
from agq.io import atomic_write_bytes

HOST = "host.json"
SCRIPT = Path(__file__).resolve().parent / "board" / "run_on_board.py"
DRIVER = "finn-plus-driver==1.6.1"
README = f"""# Deployment package (agq)

- `bitfile/finn-accel.bit`, `bitfile/finn-accel.hwh`: the accelerator (FINN's Zynq shell)
- `driver/settings.json`: FINN's driver settings (shapes, data types, DMA names)
- `host.json`: what runs on the host: the input layout change and the logit scale
- `run_on_board.py`: runs a test set through the accelerator, prints accuracy and frames/s

On the board (a PYNQ image; inside PYNQ's virtual environment, as root):

    sudo pip install {DRIVER}

`pynq` itself comes with the board image. Copy this folder and a test set (`images`, uint8, in the
model's input layout, and `labels`, in one .npz) to the board, then:

    sudo python3 run_on_board.py --data testset.npz --batch 100

It prints the top-1 accuracy, the measured end-to-end frames/s (host packing, DMA and accelerator) and
FINN's own throughput test of the accelerator alone.
"""


def host_side(parent: ModelWrapper) -> dict:
    """The host-side nodes around the one partition: input transposes before it, the logit scale after.

    Raises AgqError for any other host-side operation: the board script would silently skip it.
    """
    transposes, after = [], False
    for node in parent.graph.node:
        if node.op_type == SDP:
            after = True
        elif node.op_type == "Transpose" and not after:
            transposes.append([int(p) for a in node.attribute if a.name == "perm" for p in a.ints])
        elif not (node.op_type == "Mul" and after):
            raise AgqError(f"host-side node {node.name} ({node.op_type}) is not supported by the deployment "
                           "script (it applies input transposes and the final scale only)")
    name = parent.graph.input[0].name
    return {"input_shape": parent.get_tensor_shape(name),
            "input_datatype": parent.get_tensor_datatype(name).name,
            "input_transposes": transposes, "output_scale": output_scale(parent) or 1.0}


def write_host_side(deploy_dir: Path, parent: ModelWrapper) -> None:
    """Add agq's host description, board script and README to a deployment folder."""
    atomic_write_bytes(deploy_dir / HOST, json.dumps(host_side(parent), indent=2).encode())
    atomic_write_bytes(deploy_dir / SCRIPT.name, SCRIPT.read_bytes())
    atomic_write_bytes(deploy_dir / "README.md", README.encode())


def step_deploy_host_side(model: ModelWrapper, cfg: object) -> ModelWrapper:
    """After FINN's deployment package: add the host-side nodes, the board script and its README."""
    from agq.hw.steps import PARENT

    deploy_dir = cfg.get_deploy_directory()
    for needed in ("bitfile/finn-accel.bit", "bitfile/finn-accel.hwh", "driver/settings.json"):
        if not (deploy_dir / needed).is_file():
            raise AgqError(f"deployment package incomplete: {deploy_dir / needed} missing")
    write_host_side(deploy_dir, ModelWrapper(str(Path(cfg.output_dir) / PARENT)))
    shutil.copymode(SCRIPT, deploy_dir / SCRIPT.name)
    return model
