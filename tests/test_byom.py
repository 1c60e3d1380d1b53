"""Bring your own model: QONNX files agq did not train are built and RTL-verified from the user's own data.

The models are written here with plain Brevitas (not agq's model builder), as a FINN user would: a float
input quantized by a QuantIdentity, exported with Brevitas' default ``export_qonnx`` (dynamo on this
torch: weights in a separate ``.onnx.data`` file). The MLP trains for about a second on scikit-learn's
8x8 digits; the simulator is cached like test_hw_equivalence's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from agq.hw.rtlsim.report import FOLDER, LOGITS
from brevitas.export import export_qonnx
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from torch import nn

from agq.cli import main

SHAPE = (1, 1, 8, 8)
TRAIN = 1500  # digits images used for training; the other 297 are the test images
VERIFY = 24  # test images for FINN's verification steps (Python execution, per image and step)


class MLP(nn.Module):
    """8-bit input quantizer, two 4-bit QuantLinear + BatchNorm1d + 4-bit QuantReLU layers, 8-bit head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.fc1, self.bn1 = QuantLinear(64, 32, bias=False, weight_bit_width=4), nn.BatchNorm1d(32)
        self.act1 = QuantReLU(bit_width=4)
        self.fc2, self.bn2 = QuantLinear(32, 32, bias=False, weight_bit_width=4), nn.BatchNorm1d(32)
        self.act2 = QuantReLU(bit_width=4)
        self.fc3 = QuantLinear(32, 10, bias=False, weight_bit_width=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x.flatten(1))
        x = self.act2(self.bn2(self.fc2(self.act1(self.bn1(self.fc1(x))))))
        return self.fc3(x)


class PoolCNN(nn.Module):
    """Input quantizer, 4-bit conv + BN + ReLU, 2x2 max-pool (HLS-only in finn-plus), FC."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.conv = QuantConv2d(1, 8, 3, padding=1, bias=False, weight_bit_width=4)
        self.bn, self.act = nn.BatchNorm2d(8), QuantReLU(bit_width=4, return_quant_tensor=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = QuantLinear(8 * 4 * 4, 10, bias=False, weight_bit_width=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.bn(self.conv(self.inp(x))))), 1))


class AffineTail(nn.Module):
    """Input quantizer, 4-bit QuantLinear + BN + ReLU, then a head with a float bias and a final
    BatchNorm1d: a per-channel scale and offset after the last layer, which belong on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.fc1, self.bn1 = QuantLinear(64, 32, bias=False, weight_bit_width=4), nn.BatchNorm1d(32)
        self.act1 = QuantReLU(bit_width=4)
        self.fc2, self.tail = QuantLinear(32, 10, bias=True, weight_bit_width=8), nn.BatchNorm1d(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.fc2(self.act1(self.bn1(self.fc1(self.inp(x.flatten(1)))))))


def calibrated(module: nn.Module) -> nn.Module:
    """``module`` after a few training-mode passes (non-trivial BN statistics), in eval mode."""
    torch.manual_seed(0)
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.rand(16, *SHAPE[1:]) * 2 - 1)
    return module.eval()


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as raw uint8 images (N, 1, 8, 8) and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.round(bunch.images * 255 / 16).astype(np.uint8).reshape(-1, *SHAPE[1:]), bunch.target


def export(module: nn.Module, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    export_qonnx(module.eval(), torch.zeros(SHAPE), export_path=str(path))
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> dict[str, Path]:
    """The trained MLP exported, its test images and its own outputs on them (x/255 input)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("byom_mlp")
    images, labels = digits()
    x = torch.from_numpy(images).float() / 255
    y = torch.from_numpy(labels)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):
        for i in range(0, TRAIN, 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    with torch.no_grad():
        expected = model.eval()(x[TRAIN:]).numpy()
    assert (expected.argmax(1) == labels[TRAIN:]).mean() > 0.7, "the MLP must have learnt something"
    np.save(root / "inputs.npy", images[TRAIN:])
    np.save(root / "expected.npy", expected)
    np.save(root / "verify_inputs.npy", images[TRAIN : TRAIN + VERIFY])
    np.save(root / "verify_expected.npy", expected[:VERIFY])
    return {"model": export(model, root / "export"), "root": root,
            **{name: root / f"{name}.npy"
               for name in ("inputs", "expected", "verify_inputs", "verify_expected")}}


@pytest.fixture(scope="module")
def mlp_build(mlp) -> Path:
    out = mlp["root"] / "build"
    code = main(["build", "--model", str(mlp["model"]), "--out", str(out), "--input-scale", "1/255",
                 "--inputs", str(mlp["verify_inputs"]), "--expected", str(mlp["verify_expected"]),
                 "--allow-missing-vivado", "--no-progress"])
    assert code == 0
    return out


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_foreign_mlp_builds_all_rtl_with_the_mapping_in_the_first_thresholds(mlp, mlp_build):
    assert (mlp["model"].parent / "model.onnx.data").is_file()  # dynamo export, external weights
    report = json.loads((mlp_build / "report.json").read_text())
    assert report["agq_export"] is False
    assert report["config"]["input_scale"] == pytest.approx(1 / 255)
    partition = report["partition"]
    assert partition["all_rtl"] and partition["hls_nodes"] == 0 and partition["non_rtl"] == []
    ops = [n["op_type"] for n in report["certificate"]["partition"]]
    assert ops.count("MVAU_rtl") == 3 and ops.count("Thresholding_rtl") == 3
    assert report["certificate"]["integer_only"]
    first = next(n for n in report["certificate"]["partition"] if n["op_type"] == "Thresholding_rtl")
    assert first["inputs"][0]["datatype"] == "UINT8"  # x/255 and the input quantizer are one thresholding
    assert {n["op_type"] for n in report["host_nodes"]} == {"Mul"}  # the logit scale only


def test_finn_verifies_the_intermediate_models_on_the_users_files(mlp, mlp_build, tmp_path):
    from agq.hw.build import build_accelerator
    from agq.hw.config import HwConfig

    n = VERIFY
    assert np.array_equal(np.load(mlp_build / "input.npy"), np.load(mlp["verify_inputs"]).astype(np.float32))
    assert np.array_equal(np.load(mlp_build / "expected_output.npy"), np.load(mlp["verify_expected"]))
    verification = json.loads((mlp_build / "report.json").read_text())["finn_verification"]
    assert verification["steps"] == {step: {"passed": n, "failed": 0}
                                     for step in ("finn_onnx_python", "initial_python", "streamlined_python")}
    wrong = tmp_path / "wrong.npy"
    changed = np.load(mlp["verify_expected"])
    changed[:3] += 1.0
    np.save(wrong, changed)
    out = build_accelerator(mlp["model"], out_dir=tmp_path / "build", allow_missing_vivado=True,
                            progress=False, config=HwConfig(input_scale=1 / 255), inputs=mlp["verify_inputs"],
                            expected=wrong)
    steps = json.loads((out / "report.json").read_text())["finn_verification"]["steps"]
    assert steps["streamlined_python"] == {"passed": n - 3, "failed": 3}


def test_foreign_mlp_is_bit_exact_in_rtl_against_finn_and_expected(mlp, mlp_build, capsys):
    n = len(np.load(mlp["inputs"]))
    assert main(["rtlsim", "--build", str(mlp_build), "--inputs", str(mlp["inputs"]),
                 "--expected", str(mlp["expected"]), "--no-progress"]) == 0
    report = json.loads((mlp_build / FOLDER / "report.json").read_text())
    assert report["images"] == n and report["ok"]
    assert report["references"] == ["finn_python", "expected"]
    assert report["bit_exact"]["finn_python"] == n and report["bit_exact"]["expected"] == n
    logits = np.load(mlp_build / FOLDER / LOGITS)
    assert len(np.unique(logits, axis=0)) > 0.8 * n, "the outputs must depend on the image"
    assert "expected outputs" in (mlp_build / FOLDER / "report.md").read_text()
    wrong = mlp["root"] / "wrong_expected.npy"
    changed = np.load(mlp["expected"])
    changed[5, 3] += 10 * report_scale(mlp_build)
    np.save(wrong, changed)
    capsys.readouterr()
    assert main(["rtlsim", "--build", str(mlp_build), "--inputs", str(mlp["inputs"]),
                 "--expected", str(wrong), "--no-progress"]) == 2
    report = json.loads((mlp_build / FOLDER / "report.json").read_text())
    exact = report["bit_exact"]
    assert exact["expected"] == n - 1 and exact["expected_differing_images"] == [5]
    assert exact["finn_python"] == n and not report["ok"]


def report_scale(build: Path) -> float:
    return json.loads((build / "report.json").read_text())["output_scale"]


def test_bad_inputs_are_refused_in_one_line(mlp, mlp_build, tmp_path, capsys):
    images = np.load(mlp["inputs"])
    cases = {
        "shape": (images.reshape(len(images), 64), "shape (297, 64), the model needs (N, 1, 8, 8)"),
        "dtype": (images.astype(np.float32) / 255, "dtype float32; give the raw uint8 pixels"),
        "range": (images.astype(np.int16) * 2, "outside the uint8 range 0..255"),
    }
    for name, (data, message) in cases.items():
        np.save(tmp_path / f"{name}.npy", data)
        err = one_line_error(capsys, ["rtlsim", "--build", str(mlp_build), "--inputs",
                                      str(tmp_path / f"{name}.npy"), "--no-progress"])
        assert message in err, err
    err = one_line_error(capsys, ["rtlsim", "--build", str(mlp_build), "--no-progress"])
    assert "give them with --inputs X.npy" in err
    np.save(tmp_path / "short.npy", np.load(mlp["expected"])[:10])
    err = one_line_error(capsys, ["rtlsim", "--build", str(mlp_build), "--inputs", str(mlp["inputs"]),
                                  "--expected", str(tmp_path / "short.npy"), "--no-progress"])
    assert "need 297 rows" in err


def test_float_input_without_the_mapping_is_refused_naming_the_option(mlp, tmp_path, capsys):
    err = one_line_error(capsys, ["build", "--model", str(mlp["model"]), "--out", str(tmp_path),
                                  "--no-progress"])
    assert "input 'x' is FLOAT32" in err and "--input-scale/--input-offset" in err and "input_scale" in err
    assert not (tmp_path / "report.json").exists()


def test_maxpool_cnn_builds_to_sources_and_rtlsim_names_the_layer(mlp, tmp_path, capsys):
    out, model = tmp_path / "build", export(calibrated(PoolCNN()), tmp_path / "export")
    assert main(["build", "--model", str(model), "--out", str(out),
                 "--input-scale", "2/255", "--input-offset", "-1", "--allow-missing-vivado",
                 "--no-progress"]) == 0
    assert "only an HLS implementation in finn-plus: Pool_hls_0 (Pool_hls)" in capsys.readouterr().out
    partition = json.loads((out / "report.json").read_text())["partition"]
    assert not partition["all_rtl"] and partition["hls_nodes"] == 1 and partition["rtl_nodes"] > 0
    pool = partition["non_rtl"][0]
    sources = list((out / "finn_tmp").glob(f"code_gen_ipgen_{pool['name']}_*/top_{pool['name']}.cpp"))
    assert sources, "the HLS layer's C++ sources must be generated"
    err = one_line_error(capsys, ["rtlsim", "--build", str(out), "--inputs", str(mlp["inputs"]),
                                  "--no-progress"])
    assert "not an all-RTL build" in err and "Pool_hls_0 (Pool_hls)" in err


def test_per_channel_affine_after_the_last_layer_goes_to_the_host(mlp, tmp_path, capsys):
    model = calibrated(AffineTail())
    images = np.load(mlp["inputs"])[:60]
    with torch.no_grad():
        expected = model(torch.from_numpy(images).float() * (2 / 255) - 1).numpy()
    np.save(tmp_path / "inputs.npy", images)
    np.save(tmp_path / "expected.npy", expected)
    out = tmp_path / "build"
    assert main(["build", "--model", str(export(model, tmp_path / "export")), "--out", str(out),
                 "--input-scale", "2/255", "--input-offset", "-1", "--allow-missing-vivado",
                 "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["partition"]["all_rtl"] and report["certificate"]["integer_only"]
    tail = [n for n in report["host_nodes"] if n["op_type"] in {"Mul", "Add"}]
    assert [n["op_type"] for n in tail] == ["Mul", "Add"]
    assert len(tail[1]["inputs"][1]["values"]) == 10  # the per-channel offset, listed on the host side
    assert main(["rtlsim", "--build", str(out), "--inputs", str(tmp_path / "inputs.npy"),
                 "--expected", str(tmp_path / "expected.npy"), "--no-progress"]) == 0
    exact = json.loads((out / FOLDER / "report.json").read_text())["bit_exact"]
    assert exact["finn_python"] == exact["expected"] == len(images)


def test_external_weights_are_read_and_a_missing_file_is_named(mlp, tmp_path, capsys):
    import onnx

    folder = tmp_path / "external"
    folder.mkdir()
    onnx.save(onnx.load(str(mlp["model"])), str(folder / "model.onnx"), save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    from agq.hw.build import load_qonnx

    assert len(load_qonnx(folder / "model.onnx").graph.initializer) > 0
    (folder / "weights.bin").unlink()
    err = one_line_error(capsys, ["build", "--model", str(folder / "model.onnx"), "--input-scale", "1/255",
                                  "--no-progress"])
    assert "its weights are in weights.bin (ONNX external data), which is not beside it" in err
