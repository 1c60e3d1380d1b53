"""agq export: QONNX file + model card, 16-bit contract, lint, and an equality check that can fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from agq.export.contract import contract_violations
from agq.export.equivalence import SHOWN_DIFFERENCES, check_equivalence
from agq.export.layers import output_scale, trace_quant_layers
from agq.export.lint import lint_graph
from agq.export.qonnx import EquivalenceError, export_checkpoint, to_qonnx
from agq.export.reference import TIE_TOLERANCE_STEPS, torch_logits
from agq.training import data
from agq.training.checkpoint import load_checkpoint, load_deployable, save_checkpoint
from agq.training.config import config_from_dict
from agq.training.models import build_model
from agq.training.objective import init_weight_scales
from agq.training.quant import weight_quant
from brevitas.nn import QuantConv2d, QuantIdentity
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model

from agq.cli import main
from agq.errors import AgqError
from agq.io import file_sha256

MODEL = {"image_size": 8, "stem_channels": 8, "widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}
N_IMAGES = 96


def small_config(**model):
    return config_from_dict({"name": "tiny", "model": {**MODEL, **model}, "data": {"dataset": "digits"}})


def save(path, cfg, model, metrics=None):
    save_checkpoint(path, {
        "config": cfg.to_dict(), "model": model.state_dict(),
        "meta": {"dataset": cfg.data.dataset, "classes": data.class_names(cfg.data), "epoch": 1,
                 "phase": "finetune", "metrics": metrics or {}},
    })
    return path


def untrained(tmp_path, **model):
    cfg = small_config(**model)
    net = build_model(cfg.model)
    init_weight_scales(net)
    return save(tmp_path / "checkpoint.pt", cfg, net)


def assert_every_image_equal(eq):
    counts = ("images", "top1_equal", "int_logits_equal", "rounded_logits_equal")
    assert [eq[key] for key in counts] == [N_IMAGES] * 4
    assert eq["differences"] == [] and eq["weight_mismatches"] == []


def briefly_trained(path, **model):
    """A digits model after 20 Adam steps: BN statistics and learned scales far from their initial values."""
    torch.manual_seed(0)
    cfg = small_config(**model)
    net = build_model(cfg.model)
    images, labels = data.test_images(cfg.data)
    x, y = torch.from_numpy(images).float(), torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(20):
        idx = torch.randint(0, len(x), (64,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        top1 = float((net(x).argmax(1) == y).float().mean()) * 100
    return save(path, cfg, net, {"test_top1": top1})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return briefly_trained(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    return export_checkpoint(checkpoint, tmp_path_factory.mktemp("export"), n_images=N_IMAGES)


@pytest.fixture(scope="module")
def deployable(checkpoint):
    """(F, its traced quantizers, output scale, images, labels) for equality checks on altered graphs."""
    cfg, net, _ = load_deployable(checkpoint)
    layers = trace_quant_layers(net, (1, 1, 8, 8))
    images, labels = data.test_images(cfg.data, N_IMAGES)
    return net, layers, output_scale(layers), images, labels


def test_export_writes_qonnx_and_card(checkpoint, exported):
    card = json.loads((exported.parent / "model.json").read_text())
    model = ModelWrapper(str(exported))
    inp = model.graph.input[0].name
    assert model.get_tensor_datatype(inp) == DataType["UINT8"]
    assert model.get_tensor_shape(inp) == [1, 1, 8, 8] == card["input"]["shape"]
    assert card["input"]["datatype"] == "UINT8"
    assert not list(exported.parent.glob("*.data"))  # one self-contained file
    # qonnx cleanup, shape and datatype inference go through and leave every shape known
    again = cleanup_model(model).transform(InferShapes()).transform(InferDataTypes())
    assert again.check_all_tensor_shapes_specified()

    bits = [(layer["name"], layer.get("weight_bits", layer.get("act_bits"))) for layer in card["layers"]]
    assert bits == [("stem", 16), ("blocks.0.layers.0.act", 2), ("blocks.0.layers.0.conv", 2),
                    ("blocks.1.layers.0.act", 2), ("blocks.1.layers.0.conv", 2),
                    ("head.act", 2), ("head.fc", 16)]
    assert all(layer["narrow_range"] for layer in card["layers"] if layer["kind"] != "act")

    _, net, meta = load_deployable(checkpoint)
    with torch.no_grad():
        expected_scale = float(net.head.act.act_quant.scale()) * float(net.head.fc.quant_weight().scale)
    assert card["output"]["scale"] == pytest.approx(expected_scale, rel=1e-12)
    assert card["classes"] == [str(i) for i in range(10)]
    assert card["dataset"] == "digits"
    assert card["trained"]["metrics"]["test_top1"] == meta.metrics["test_top1"]
    assert card["checkpoint"]["sha256"] == file_sha256(checkpoint)
    assert card["model"] == {"path": "model.onnx", "sha256": file_sha256(exported)}
    assert set(card["versions"]) == {"agq", "torch", "brevitas", "qonnx", "onnx"}

    assert_every_image_equal(card["equivalence"])


def test_log_domain_weight_scales_export_bit_exact(tmp_path):
    checkpoint = briefly_trained(tmp_path / "checkpoint.pt", weight_scale="log")
    _, net, _ = load_deployable(checkpoint)
    conv = net.blocks[0].layers[0].conv
    stored = conv.weight_quant.tensor_quant.scaling_impl.value.detach()
    assert torch.allclose(2 ** stored.flatten(), conv.quant_weight().scale.detach().flatten())
    exported = export_checkpoint(checkpoint, tmp_path / "export", n_images=N_IMAGES)
    assert_every_image_equal(json.loads((exported.parent / "model.json").read_text())["equivalence"])


def test_reexport_is_byte_identical(checkpoint, exported, tmp_path):
    again = export_checkpoint(checkpoint, tmp_path, n_images=N_IMAGES)
    assert again.read_bytes() == exported.read_bytes()
    assert (tmp_path / "model.json").read_bytes() == (exported.parent / "model.json").read_bytes()


def test_contract_passes_on_trained_model(deployable):
    net, layers, *_ = deployable
    assert contract_violations(layers, net.cfg) == []


def test_integer_logits_are_the_rounded_logits(deployable):
    net, _, scale, images, _ = deployable
    with torch.no_grad():
        logits = net(torch.from_numpy(images).float()).numpy().astype(np.float64)
    exact = torch_logits(net, images)[0]  # the exact integer logits: what the last MVAU outputs
    assert exact.dtype == np.int64 and np.abs(exact).max() > 1000
    np.testing.assert_array_equal(exact, np.round(logits / scale))


def test_contract_names_an_8_bit_first_layer():
    cfg = small_config()
    net = build_model(cfg.model)
    net.stem = QuantConv2d(1, 8, 3, padding=1, bias=False, weight_quant=weight_quant(8, wide=True))
    problems = contract_violations(trace_quant_layers(net.eval(), (1, 1, 8, 8)), cfg.model)
    assert problems == ["stem (first layer): weights are 8-bit, the contract needs 16-bit"]


def test_export_stops_on_a_checkpoint_outside_the_contract(tmp_path):
    # the config refuses first_last_bits != 16 (the contract on the modules: the test above); a checkpoint
    # written before that rule is refused by the same config check, naming the key
    cfg = small_config()
    ckpt = save(tmp_path / "checkpoint.pt", cfg, build_model(cfg.model))
    payload = load_checkpoint(ckpt)
    payload["config"]["model"]["first_last_bits"] = 8
    save_checkpoint(ckpt, payload)
    with pytest.raises(AgqError, match=r"model.first_last_bits=8: must be 16"):
        export_checkpoint(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_lint_lists_residual_add_with_fix(tmp_path):
    ckpt = untrained(tmp_path, arch="residual")
    with pytest.raises(AgqError, match=r"Add_0 \(Add\): residual Add .*fix: use the plain architecture"):
        export_checkpoint(ckpt, tmp_path / "out")


def test_lint_flags_full_range_weights_and_missing_uint8(exported):
    model = ModelWrapper(str(exported))
    assert lint_graph(model) == []
    conv_weight_quant = model.find_producer(model.get_nodes_by_op_type("Conv")[1].input[1])
    next(a for a in conv_weight_quant.attribute if a.name == "narrow").i = 0
    model.set_tensor_datatype(model.graph.input[0].name, DataType["FLOAT32"])
    findings = {(f.node, f.problem.split(" ")[0]) for f in lint_graph(model)}
    assert findings == {(conv_weight_quant.name, "full-range"), ("global_in", "input")}


def test_equality_check_fails_on_one_altered_weight(exported, deployable):
    net, layers, scale, images, labels = deployable
    model = ModelWrapper(str(exported))
    assert check_equivalence(net, layers, model, images, labels, scale).ok
    stem_quant = model.find_producer(model.get_nodes_by_op_type("Conv")[0].input[1])
    weight = model.get_initializer(stem_quant.input[0]).copy()
    flat = np.abs(weight).argmax()
    weight.flat[flat] = -weight.flat[flat]
    model.set_initializer(stem_quant.input[0], weight)

    report = check_equivalence(net, layers, model, images, labels, scale)
    assert not report.ok
    assert report.weight_mismatches == [
        f"stem ({stem_quant.name}): 1 of 72 quantized weights in the QONNX graph differ from PyTorch's"]
    assert report.int_logits_equal < N_IMAGES
    assert report.differences and not report.ties
    assert all("blocks.0.layers.0.act" in d.cause and "quantization steps apart" in d.cause
               for d in report.differences)


def head_bn_bias(model):
    """Name of the bias of the QONNX BatchNormalization that feeds the last activation quantizer."""
    flatten = model.find_producer(model.get_nodes_by_op_type("MatMul")[0].input[0])
    quant = model.find_producer(flatten.input[0])
    bn = model.find_producer(model.find_producer(quant.input[0]).input[0])
    assert (flatten.op_type, quant.op_type, bn.op_type) == ("Flatten", "Quant", "BatchNormalization")
    return bn.input[2]


@pytest.mark.parametrize("onnx_value, is_tie", [(1.5 * (1 - 1e-6), True), (1.2, False)])
def test_float_tie_is_told_apart_from_an_error(checkpoint, onnx_value, is_tie):
    """Channel 0 of the head BN is made a constant a hair above the rounding threshold 1.5 (in steps) in
    PyTorch; the QONNX file holds ``onnx_value`` steps instead: a few float steps below (the tie of
    FINN-NOTES.md) or 0.3 steps below (a real difference)."""
    cfg, net, _ = load_deployable(checkpoint)
    s = float(net.head.act.act_quant.scale().detach())
    above = np.float32(1.5 * (1 + 1e-6) * s)
    with torch.no_grad():
        net.head.bn.weight[0] = 0.0
        net.head.bn.bias[0] = float(above)
    layers = trace_quant_layers(net, (1, 1, 8, 8))
    model = to_qonnx(net, (1, 1, 8, 8))
    bias = model.get_initializer(head_bn_bias(model)).copy()
    bias[0] = np.float32(onnx_value * s)
    assert (abs(float(bias[0]) - float(above)) / s < TIE_TOLERANCE_STEPS) is is_tie
    model.set_initializer(head_bn_bias(model), bias)
    images, labels = data.test_images(cfg.data, 8)

    report = check_equivalence(net, layers, model, images, labels, output_scale(layers))
    assert len(report.differences) == 8  # channel 0 is the same constant in every image
    assert report.ok is is_tie
    cause = report.differences[0].cause
    assert cause.startswith("head.act (")
    if is_tie:
        assert "rounding threshold" in cause
        assert f"{float(above):.9g} in PyTorch vs {float(bias[0]):.9g} in QONNX (" in cause
    else:
        assert "quantization steps apart" in cause


@pytest.mark.parametrize("problem", ["missing", "corrupt", "other architecture"])
def test_bad_checkpoint_is_one_clear_error(tmp_path, checkpoint, problem):
    path = tmp_path / "checkpoint.pt"
    if problem == "corrupt":
        path.write_bytes(b"not a torch file")
    elif problem == "other architecture":
        cfg = small_config(widths=[8, 32])
        save(path, cfg, load_deployable(checkpoint)[1])
    expected = {"missing": "checkpoint not found", "corrupt": "is corrupt or not a torch file",
                "other architecture": "does not fit its model config"}[problem]
    with pytest.raises(AgqError, match=expected):
        export_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_exports_and_reports(checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--images", "16"]) == 0
    assert "16 top-1 equal, 16 integer logits equal, 16 round(logits / scale) equal, 0 float ties" in (
        capsys.readouterr().out)
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "agq export: error: checkpoint not found" in capsys.readouterr().err


def test_cli_reports_the_first_differing_images_and_writes_nothing(checkpoint, tmp_path, capsys, monkeypatch):
    """An export whose graph is not F (one stem weight negated) fails with its first problems listed."""
    import agq.export.qonnx

    def altered(model, shape):
        qmodel = to_qonnx(model, shape)
        quant = qmodel.find_producer(qmodel.get_nodes_by_op_type("Conv")[0].input[1])
        weight = qmodel.get_initializer(quant.input[0]).copy()
        weight.flat[np.abs(weight).argmax()] *= -1
        qmodel.set_initializer(quant.input[0], weight)
        return qmodel

    monkeypatch.setattr(agq.export.qonnx, "to_qonnx", altered)
    with pytest.raises(EquivalenceError) as failure:
        export_checkpoint(checkpoint, tmp_path / "out", n_images=16)
    assert not (tmp_path / "out").exists()
    args = ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--images", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    problems = failure.value.report.problems()
    assert len(problems) > SHOWN_DIFFERENCES and problems[0].startswith("stem (")
    first = err.index(problems[0])
    assert err[first : first + SHOWN_DIFFERENCES + 1] == [
        *problems[:SHOWN_DIFFERENCES],
        f"... and {len(problems) - SHOWN_DIFFERENCES} more (not shown: nothing was written)"]
    assert sum(line.startswith("image ") for line in err) == SHOWN_DIFFERENCES - 1
    assert err[-1].startswith("agq export: error: exported model differs from PyTorch")


def lint_findings(*layers):
    """(op, first word of the problem) of every lint finding on a small Brevitas net exported as QONNX."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*layers).eval()
    return sorted((f.op, f.problem.split(" ")[0]) for f in lint_graph(to_qonnx(net, (1, 1, 8, 8))))


def conv(bias=False):
    return QuantConv2d(1, 4, 3, padding=1, bias=bias, weight_quant=weight_quant(2, wide=False))


@pytest.mark.parametrize(("layers", "expected"), [
    (lambda: [conv()], []),
    (lambda: [conv(), torch.nn.MaxPool2d(2)], [("MaxPool", "pooling")]),
    (lambda: [conv(), torch.nn.AvgPool2d(2)], [("AveragePool", "pooling")]),
    (lambda: [conv(), torch.nn.AdaptiveAvgPool2d(1)], [("GlobalAveragePool", "global")]),
    (lambda: [conv(bias=True)], [("Conv", "layer")]),
    (lambda: [QuantIdentity(), conv()], [("Quant", "input")]),
], ids=["plain", "maxpool", "avgpool", "global-pool", "bias", "input-quantizer"])
def test_lint_flags_pooling_bias_and_input_quantizer(layers, expected):
    assert lint_findings(*layers()) == expected
