"""A user's own images and expected outputs for ``agq rtlsim --inputs X.npy [--expected Y.npy]``.

The accelerator takes raw uint8 pixels in the model's input layout, so the images must be an integer
array of shape (N, *input shape without batch) with values in 0..255; a float array is refused even
when its values are whole numbers, because it is most often already preprocessed (x/255). The
expected outputs are what the user's model computes on those images (N, *output shape): integers are
compared with the hardware's integer outputs as they are, floats after undoing the host side of the
accelerator (the float Mul/Add nodes after the partition: the logit scale, a per-channel affine) and
rounding. Every problem is one AgqError naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from agq.errors import AgqError
from agq.io import not_a_file

PIXEL_MAX = 255
SDP = "StreamingDataflowPartition"
INVERTIBLE = {"Mul", "Add"}


def load_array(path: Path, option: str) -> np.ndarray:
    """One array from a .npy file; AgqError naming ``option`` and the file when it is not one."""
    if not path.is_file():
        raise AgqError(f"{option} {path}: file {not_a_file(path)}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AgqError(f"{option} {path}: not a NumPy .npy array ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, np.ndarray):
        raise AgqError(f"{option} {path}: holds several arrays; save one array with np.save")
    return data


def load_inputs(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """Raw images (N, *input_shape[1:]) as float32 (the partition's container type) from ``path``."""
    data = load_array(path, "--inputs")
    want = tuple(input_shape[1:])
    if data.ndim != len(want) + 1 or tuple(data.shape[1:]) != want or len(data) == 0:
        dims = ", ".join(map(str, want))
        raise AgqError(f"--inputs {path}: shape {data.shape}, the model needs (N, {dims}) with N >= 1")
    if data.dtype.kind not in "ui":
        raise AgqError(f"--inputs {path}: dtype {data.dtype}; give the raw uint8 pixels (the accelerator "
                       "applies the input mapping itself)")
    low, high = int(data.min()), int(data.max())
    if low < 0 or high > PIXEL_MAX:
        raise AgqError(f"--inputs {path}: values {low}..{high} outside the uint8 range 0..{PIXEL_MAX}")
    return data.astype(np.float32)


def host_tail(parent: ModelWrapper) -> list[tuple[str, str, np.ndarray]]:
    """(node name, op, constant) of every node after the dataflow partition, in order; AgqError naming
    a node that is not an elementwise Mul/Add with a constant (agq cannot undo it)."""
    nodes = list(parent.graph.node)
    sdp = next(i for i, n in enumerate(nodes) if n.op_type == SDP)
    tail = []
    for node in nodes[sdp + 1 :]:
        consts = [parent.get_initializer(name) for name in node.input]
        if node.op_type not in INVERTIBLE or sum(c is not None for c in consts) != 1 or consts[0] is not None:
            raise AgqError(f"--expected: the host side after the partition has {node.name} ({node.op_type}), "
                           "which agq cannot undo; give the partition's integer outputs as --expected")
        tail.append((node.name, node.op_type, consts[1].astype(np.float64)))
    return tail


def load_expected(path: Path, images: int, outputs: int, tail: list[tuple[str, str, np.ndarray]]
                  ) -> np.ndarray:
    """Expected outputs as int64 (images, outputs) in the hardware's integer domain; float outputs are
    taken back through the host side ``tail`` (:func:`host_tail`) and rounded."""
    data = load_array(path, "--expected")
    if len(data.shape) < 1 or data.shape[0] != images or data.size != images * outputs:
        raise AgqError(f"--expected {path}: shape {data.shape}, need {images} rows (one per --inputs image) "
                       f"of {outputs} values")
    flat = data.reshape(images, outputs)
    if data.dtype.kind in "ui":
        return flat.astype(np.int64)
    if data.dtype.kind != "f" or not np.isfinite(flat).all():
        raise AgqError(f"--expected {path}: dtype {data.dtype} with non-finite or non-numeric values")
    values = flat.astype(np.float64)
    for name, op, const in reversed(tail):
        if op == "Mul" and not np.all(const):
            raise AgqError(f"--expected {path}: {name} multiplies by 0, so the hardware's output cannot be "
                           "recovered from the expected outputs")
        values = values / const.reshape(1, -1) if op == "Mul" else values - const.reshape(1, -1)
    if not tail and not np.array_equal(values, np.round(values)):
        raise AgqError(f"--expected {path}: the build has no host-side scale, so the expected outputs must "
                       "be integers")
    return np.round(values).astype(np.int64)
