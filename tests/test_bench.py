"""The benchmark: tables from run records, row selection, shared pre-training, records from run folders."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from agq.cli import main
from agq.errors import AgqError
from bench import accuracy, table
from bench.accuracy import PRETRAIN, Job, Runner, jobs
from bench.fill_table import row_of
from bench.rows import ROWS, row
from training.config import Config, load_config

DIGITS = "configs/digits_tiny.yaml"


def record(row: str, seed: int, finetune: list[float], pretrain: float = 50.0, arch: str = "plain") -> dict:
    history = [{"phase": "pretrain", "epoch": 1, "test_F_top1": pretrain}]
    history += [{"phase": "finetune", "epoch": i + 1, "test_F_top1": v} for i, v in enumerate(finetune)]
    return {"row": row, "arch": arch, "seed": seed, "history": history}


def test_table_takes_the_last_finetune_epoch_and_summarises_over_seeds():
    records = [record("plain", 0, [80.0, 90.0]), record("plain", 1, [70.0, 92.0]),
               record("plain", 2, [0.0, 94.0]), record("residual", 0, [96.0], arch="residual"),
               record("plain_ag", 0, [93.0])]
    stats = table.summary(records)
    plain = stats["plain"]["test_F_top1"]
    assert plain["values"] == [90.0, 92.0, 94.0]
    assert plain["mean"] == pytest.approx(92.0)
    assert plain["std"] == pytest.approx(statistics.stdev([90.0, 92.0, 94.0]))  # sample std: 2.0
    assert plain["std"] == pytest.approx(2.0)
    assert stats["residual"]["test_F_top1"]["std"] is None  # one seed: no spread to report
    assert stats["fp"]["test_F_top1"]["values"] == [50.0, 50.0, 50.0]  # plain runs' pre-training, per seed
    gap = table.gap_recovered(records, "plain_ag")  # only seed 0 has all three rows
    assert gap["seeds"] == [0] and gap["share"] == pytest.approx((93 - 90) / (96 - 90))
    md = table.markdown(stats, "t")
    assert "| plain 2-bit | 92.00 ± 2.00 |" in md and "| residual 2-bit | 96.00 |" in md
    assert table.curves(records)["plain"] == {1: [80.0, 70.0, 0.0], 2: [90.0, 92.0, 94.0]}


def test_unknown_row_is_rejected_before_anything_runs(capsys):
    with pytest.raises(AgqError, match="unknown benchmark row 'plian'"):
        jobs(1, 0, ["plain", "plian"])
    assert main(["bench", "--only", "accuracy", "--rows", "plian"]) == 2
    assert "unknown benchmark row" in capsys.readouterr().err


def test_records_folder_with_a_broken_record_is_an_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(record("plain", 0, [1.0])))
    assert len(table.load_records(tmp_path)) == 1
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(AgqError, match=r"b\.json is not valid JSON"):
        table.load_records(tmp_path)


def test_job_order_pretrains_first_then_seed_0_then_the_core_rows():
    keys = [j.key for j in jobs(2, 1)]
    assert keys[:4] == ["pretrain_plain_s0", "pretrain_residual_s0", "pretrain_plain_s1",
                        "pretrain_residual_s1"]
    main_rows = [r.name for r in ROWS if r.group == "main" and r.name != "fp"]
    core = [r.name for r in ROWS if r.core]
    assert keys[4:4 + len(main_rows)] == [f"{n}_s0" for n in main_rows]
    assert keys[4 + len(main_rows):4 + len(main_rows) + len(core)] == [f"{n}_s1" for n in core]
    assert keys[-1] == "ssp_layer_wa_s0" and "ag_layer_s1" not in keys
    assert len(keys) == len(set(keys)) == 4 + 2 * len(main_rows) + 4


def test_every_row_is_a_valid_config_and_maps_back_to_itself():
    base = load_config(accuracy.BASE_CONFIG)
    for r in ROWS:
        if r.name == "fp":
            continue
        cfg = load_config(accuracy.BASE_CONFIG, accuracy.row_overrides(r, 1, base.to_dict()))
        assert cfg.train.seed == 1 and cfg.train.epochs == base.train.epochs * r.epoch_factor
        assert row_of(cfg.to_dict(), base.train.epochs) == r.name


def test_a_run_that_fits_no_row_is_named():
    cfg = Config().to_dict()
    cfg["baseline"]["kd"] = True  # KD on top of AG + SSP: not a row
    with pytest.raises(AgqError, match="fits no benchmark row"):
        row_of(cfg, cfg["train"]["epochs"])


def test_shared_pretraining_refuses_a_model_difference():
    cfg = Config().to_dict()
    other = json.loads(json.dumps(cfg))
    other["ag"]["enabled"] = not cfg["ag"]["enabled"]
    accuracy._check_shareable(cfg, other)  # AG is read by fine-tuning only
    other["model"]["widths"] = [8, 8, 8]
    with pytest.raises(AgqError, match=r"model\.widths"):
        accuracy._check_shareable(cfg, other)


def test_row_from_shared_pretraining_equals_the_row_trained_alone(tmp_path):
    from training.checkpoint import load_checkpoint
    from training.loop import train

    extra = [f"train.output_dir={tmp_path / 'shared'}", "train.pretrain_epochs=1", "train.epochs=2"]
    runner = Runner(tmp_path / "records", extra, base=DIGITS)
    runner.records.mkdir()
    runner.run(Job(PRETRAIN, 0, "plain"))
    shared = runner.run(Job("plain_ag_ssp", 0))
    alone_cfg = load_config(DIGITS, [*extra, f"train.output_dir={tmp_path / 'alone'}",
                                     *accuracy.row_overrides(row("plain_ag_ssp"), 0, runner.base.to_dict())])
    alone = train(alone_cfg, progress=False)
    drop = ("time_s", "eval_s", "cpu_s")
    strip = [{k: v for k, v in h.items() if k not in drop} for h in shared["history"]]
    assert strip == [{k: v for k, v in h.items() if k not in drop}
                     for h in json.loads((alone.parent / "metrics.json").read_text())]
    a = load_checkpoint(runner.config(Job("plain_ag_ssp", 0)).run_dir / "checkpoint.pt")["model"]
    b = load_checkpoint(alone)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
