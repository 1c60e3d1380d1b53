"""FINN's own verification of the intermediate models: ``input.npy`` and ``expected_output.npy`` for every
build, and FINN's verification steps that run without Vivado.

FINN's builder executes the model after step_qonnx_to_finn, step_tidy_up and step_streamline on
``cfg.verify_input_npy`` and compares with ``cfg.verify_expected_output_npy`` (its tolerances), writing
``verification_output/verify_<step>_<image>_<SUCCESS|FAIL>.npy``; its later checks need C++ or RTL
simulation of HLS layers (Vitis) or XSim. The pair comes from PyTorch for a model `agq export` wrote
(test images, F's float logits), else from the user's files (``agq build --inputs/--expected``); for
a model agq did not train and without files, seeded random pixels and qonnx's execution of the model
as given (with its input mapping), so FINN's transformations are still checked against the file.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
from agq.hw.rtlsim.user_data import load_array, load_inputs
from qonnx.core.modelwrapper import ModelWrapper

from agq.io import atomic_write_bytes

INPUT = "input.npy"
EXPECTED = "expected_output.npy"
DEFAULT_IMAGES = 8
# FINN executes every verification image once per step in Python: the first 32 of the user's files
MAX_IMAGES = 32
# FINN's mean-relative-error check divides by the expected value: a logit that is 0 in one execution and
# 6e-8 in the other (measured, a foreign MLP on digits) is a relative error of 1 and fails the image.
# Its element-wise check (atol 1e-3 + rtol 1e-5) and mean absolute error check stay on.
MEAN_RTOL = float("inf")
RESULT = re.compile(r"verify_(?P<step>.+)_(?P<image>\d+)_(?P<result>SUCCESS|FAIL)\.npy")


def verify_steps() -> list:
    """FINN's verification steps that need neither Vivado nor Vitis (Python execution)."""
    from finn.builder.build_dataflow_config import VerificationStepType as V

    return [V.QONNX_TO_FINN_PYTHON, V.TIDY_UP_PYTHON, V.STREAMLINED_PYTHON]


def _torch_pair(card_path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    import torch
    from agq.training.checkpoint import load_deployable
    from agq.training.data import test_images

    checkpoint = Path(json.loads(card_path.read_text())["checkpoint"]["path"])
    cfg, model, _ = load_deployable(checkpoint)
    raw, _ = test_images(cfg.data, DEFAULT_IMAGES)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(raw.astype(np.float32))).numpy()
    source = f"PyTorch ({checkpoint}), {len(raw)} {cfg.data.dataset} test images"
    return raw.astype(np.float32), logits, source


def _qonnx_outputs(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    from qonnx.core.onnx_exec import execute_onnx

    name, out = model.graph.input[0].name, model.graph.output[0].name
    return np.concatenate([execute_onnx(model, {name: x[i : i + 1]})[out] for i in range(len(x))])


def verification_pair(model: ModelWrapper, card: Path | None, inputs: Path | None, expected: Path | None
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """(input, expected output, where they come from) for FINN's verification of this build.

    ``model`` is the model the build starts from (input mapping prepended); ``card`` the model card of
    an agq export (None otherwise).
    """
    from agq.errors import AgqError

    if card is not None and inputs is None:
        return _torch_pair(card)
    if expected is not None and inputs is None:
        raise AgqError("--expected needs --inputs (the images the expected outputs belong to)")
    shape = tuple(model.get_tensor_shape(model.graph.input[0].name))
    if inputs is not None:
        x = load_inputs(Path(inputs), shape)
        total, x = len(x), x[:MAX_IMAGES]
        source = f"--inputs {inputs} (first {len(x)} of {total})"
    else:
        x = np.random.default_rng(0).integers(0, 256, (DEFAULT_IMAGES, *shape[1:])).astype(np.float32)
        source = f"{DEFAULT_IMAGES} seeded random uint8 images"
    if expected is None:
        return x, _qonnx_outputs(model, x), f"{source}, expected from qonnx's execution of the model"
    y = load_array(Path(expected), "--expected")
    if len(y) != total:
        raise AgqError(f"--expected {expected}: {len(y)} rows for {total} --inputs images")
    return x, y[: len(x)].astype(np.float32), f"{source}, --expected {expected}"


def write_pair(build_dir: Path, x: np.ndarray, y: np.ndarray) -> None:
    for name, data in ((INPUT, x), (EXPECTED, y)):
        buffer = io.BytesIO()
        np.save(buffer, data)
        atomic_write_bytes(build_dir / name, buffer.getvalue())


def results(build_dir: Path) -> dict[str, dict[str, int]]:
    """Per FINN verification step: images that passed and failed (from FINN's output file names)."""
    counts: dict[str, dict[str, int]] = {}
    for file in sorted((build_dir / "verification_output").glob("verify_*.npy")):
        match = RESULT.fullmatch(file.name)
        if match:
            step = counts.setdefault(match["step"], {"passed": 0, "failed": 0})
            step["passed" if match["result"] == "SUCCESS" else "failed"] += 1
    return counts
