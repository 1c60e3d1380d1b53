"""The integer-only certificate: every datatype inside the dataflow partition, and proof that none is float.

FINN's create_dataflow_partition only *warns* about float layers. agq lists each partition node with
the FINN datatypes of its streams and parameters and the values of its parameters, and refuses the
build if any of them is float, or if a parameter tensor annotated as integer holds a value that is not
an integer of that type (a float multiplier in disguise). Host-side nodes (input layout, final logit
scale) are listed separately: they run on the CPU and may be float.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from agq.errors import AgqError

SDP = "StreamingDataflowPartition"
# the name FINN's layers give their parameter input (input 1), by op type prefix
# host-side constants up to this many values are listed in full (per-channel output affines)
MAX_LISTED = 1024
PARAM_ROLES = {"MVAU": "weights", "VVAU": "weights", "Thresholding": "thresholds"}


def _role(op_type: str, is_const: bool) -> str:
    if not is_const:
        return "stream"
    return next((role for prefix, role in PARAM_ROLES.items() if op_type.startswith(prefix)), "const")


def _hw_datatype(model: ModelWrapper, node, index: int, output: bool) -> DataType:  # noqa: ANN001
    """The datatype the hardware layer itself uses (its node attributes), else the tensor annotation."""
    try:
        inst = getCustomOp(node)
        return inst.get_output_datatype(index) if output else inst.get_input_datatype(index)
    except Exception:  # not every FINN layer answers for every input; the annotation is the fallback
        name = node.output[index] if output else node.input[index]
        return model.get_tensor_datatype(name)


def _param_problem(values: np.ndarray, dt: DataType) -> str | None:
    """Why a constant tensor is not an integer tensor of type ``dt`` (None if it is)."""
    if not dt.is_integer():
        return f"{dt.name} parameter"
    if not np.array_equal(values, np.round(values)):
        return f"non-integer values in a {dt.name} parameter"
    if values.size and (values.min() < dt.min() or values.max() > dt.max()):
        return f"values {values.min():g}..{values.max():g} outside {dt.name}"
    return None


def partition_node(model: ModelWrapper, node) -> dict:  # noqa: ANN001 - an onnx NodeProto
    """One partition node: its inputs and outputs with datatypes, and what (if anything) is float."""
    inputs, problems = [], []
    for i, name in enumerate(node.input):
        values = model.get_initializer(name)
        dt = _hw_datatype(model, node, i, output=False)
        entry = {"tensor": name, "role": _role(node.op_type, values is not None), "datatype": dt.name}
        problem = _param_problem(values, dt) if values is not None else (
            None if dt.is_integer() else f"{dt.name} input")
        if values is not None:
            entry["shape"] = list(values.shape)
        if problem:
            problems.append(f"{name}: {problem}")
        inputs.append(entry)
    outputs = []
    for i, name in enumerate(node.output):
        dt = _hw_datatype(model, node, i, output=True)
        outputs.append({"tensor": name, "datatype": dt.name})
        if not dt.is_integer():
            problems.append(f"{name}: {dt.name} output")
    return {"name": node.name, "op_type": node.op_type, "inputs": inputs, "outputs": outputs,
            "float": problems}


def host_node(model: ModelWrapper, node) -> dict:  # noqa: ANN001 - an onnx NodeProto
    """A node that runs on the host, with its constant operands (the logit scale shows up here)."""
    inputs = []
    for name in node.input:
        entry = {"tensor": name, "datatype": model.get_tensor_datatype(name).name}
        values = model.get_initializer(name)
        if values is not None:
            entry["shape"] = list(values.shape)
            if values.size == 1:
                entry["value"] = float(values.reshape(-1)[0])
            elif values.size <= MAX_LISTED:  # a per-channel scale or offset moved to the host
                entry["values"] = values.reshape(-1).astype(float).tolist()
        inputs.append(entry)
    return {"name": node.name, "op_type": node.op_type, "inputs": inputs,
            "outputs": [{"tensor": o, "datatype": model.get_tensor_datatype(o).name} for o in node.output]}


def certificate(partition: ModelWrapper, parent: ModelWrapper) -> dict:
    """The certificate of a partition (child model) and its parent (host nodes + the partition node)."""
    nodes = [partition_node(partition, n) for n in partition.graph.node]
    host = [host_node(parent, n) for n in parent.graph.node if n.op_type != SDP]
    return {
        "integer_only": not any(n["float"] for n in nodes),
        "partition_nodes": len(nodes),
        "partition": nodes,
        "host": host,
        "output_scale": output_scale(parent),
    }


def output_scale(parent: ModelWrapper) -> float | None:
    """The scalar the host multiplies the partition's integer output by (None if there is none)."""
    outputs = {o.name for o in parent.graph.output}
    for node in parent.graph.node:
        if node.op_type == "Mul" and node.output[0] in outputs:
            for name in node.input:
                values = parent.get_initializer(name)
                if values is not None and values.size == 1:
                    return float(values.reshape(-1)[0])
    return None


def require_integer_only(cert: dict) -> None:
    """Raise AgqError naming every float operation left inside the partition."""
    bad = [n for n in cert["partition"] if n["float"]]
    if bad:
        listing = "; ".join(
            f"{n['name']} ({', '.join(sorted({p.split(': ', 1)[1] for p in n['float']}))})" for n in bad)
        raise AgqError(
            f"integer-only certificate failed: float operation(s) inside the dataflow partition: {listing}. "
            "Fix: every tensor between the input and the final scale must be quantized - no skip "
            "connections or unquantized branches, and float scales only at the output (host side)"
        )
