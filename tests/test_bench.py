"""The benchmark: tables from run records, row selection, shared pre-training, records from run folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from agq.bench import accuracy, table, verdict
from agq.bench.accuracy import PRETRAIN, Job, Runner, jobs
from agq.bench.fill_table import base_scale, row_of
from agq.bench.rows import PRETRAINED_ONLY, ROWS, row
from agq.training.config import Config, load_config

from agq.cli import main
from agq.errors import AgqError

DIGITS = "configs/digits_tiny.yaml"
DIGITS_ABS = Path(DIGITS).resolve()


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
    # by hand: deviations -2, 0, +2 from the mean 92; sample variance (4 + 0 + 4) / (3 - 1) = 4, std 2
    # (the population std, sqrt(8 / 3) = 1.633, would be the wrong estimator over seeds)
    assert plain["std"] == pytest.approx(2.0)
    assert stats["residual"]["test_F_top1"]["std"] is None  # one seed: no spread to report
    assert stats["fp"]["test_F_top1"]["values"] == [50.0, 50.0, 50.0]  # plain runs' pre-training, per seed
    gap = table.gap_recovered(records, "plain_ag")  # only seed 0 has all three rows
    assert gap["seeds"] == [0] and gap["share"] == pytest.approx((93 - 90) / (96 - 90))
    md = table.markdown(stats, "t")
    assert "| plain 2-bit | 92.00 ± 2.00 |" in md and "| residual 2-bit | 96.00 |" in md
    assert table.curves(records)["plain"] == {1: [80.0, 70.0, 0.0], 2: [90.0, 92.0, 94.0]}


def test_the_scale_domain_table_names_the_domain_the_setting_gave_plain_and_residual():
    def run(row: str, scale: str) -> dict:
        arch = "residual" if row.startswith("residual") else "plain"
        return {**record(row, 0, [98.0], arch=arch), "config": {"model": {"weight_scale": scale}}}

    log_setting = [run("residual", "log")]  # mnist_deep26_96_log: residual learns log scales
    md = table.markdown(table.summary(log_setting), "t", scale=table.setting_scale(log_setting))
    assert table.setting_scale(log_setting) == "log" and "| residual, log (LOG_FP) | 98.00 |" in md
    assert "linear" not in md
    linear_setting = [run("residual", "linear"), run("residual_log", "log")]
    md = table.markdown(table.summary(linear_setting), "t", scale=table.setting_scale(linear_setting))
    assert "| residual, linear (Brevitas' default) | 98.00 |" in md
    assert "| residual, log (LOG_FP) | 98.00 |" in md
    assert table.setting_scale([run("plain", "linear"), run("residual", "log")]) == "mixed"
    assert table.setting_scale([record("plain", 0, [90.0])]) == "linear"  # no saved config: a linear run


def test_pretraining_plateau_reads_half_three_quarters_and_the_end_over_seeds():
    def pretrained(seed: int, arch: str, top1: list[float], loss: float) -> dict:
        history = [{"phase": "pretrain", "epoch": i + 1, "test_F_top1": v, "train_loss": loss}
                   for i, v in enumerate(top1)]
        return {"row": PRETRAIN, "arch": arch, "seed": seed, "history": history}

    records = [pretrained(0, "plain", [10, 20, 30, 40, 50, 60, 70, 80], 0.5),
               pretrained(1, "plain", [12, 22, 32, 42, 52, 62, 72, 82], 0.25),
               pretrained(0, "residual", [90, 91, 92, 93], 0.1),
               {**record("plain", 0, [5.0], pretrain=99.0), "pretrain": "plain"}]  # the seed's first record
    stats = table.pretraining(records)
    assert stats["fp"]["epoch_at"] == {"50%": 4, "75%": 6, "100%": 8}
    assert [e["mean"] for e in stats["fp"]["top1_at"].values()] == [41.0, 61.0, 81.0]
    assert stats["fp"]["final_train_loss"]["mean"] == 0.375
    assert [e["values"] for e in stats["fp_residual"]["top1_at"].values()] == [[91], [92], [93]]
    md = table.pretraining_markdown(stats)
    assert ("| full precision plain (after pre-training only) | 8 | 41.00 ± 1.41 | 61.00 ± 1.41 "
            "| 81.00 ± 1.41 | 0.3750 | 2 |") in md


def test_unknown_row_is_rejected_before_anything_runs(capsys):
    with pytest.raises(AgqError, match="unknown benchmark row 'plian'"):
        jobs(1, 0, ["plain", "plian"])
    assert main(["bench", "--only", "accuracy", "--rows", "plian"]) == 2
    assert "unknown benchmark row" in capsys.readouterr().err


def test_a_missing_config_is_one_line_before_its_results_folder_is_made(tmp_path, capsys):
    from agq.bench.cli import RESULTS

    for config in (tmp_path / "agq_no_such_setting.yaml", tmp_path):
        assert main(["bench", "--only", "report", "--config", str(config)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(config) in err[0]
        assert not (RESULTS / config.stem).exists()


def test_records_folder_with_a_broken_record_is_an_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(record("plain", 0, [1.0])))
    assert len(table.load_records(tmp_path)) == 1
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(AgqError, match=r"b\.json is not valid JSON"):
        table.load_records(tmp_path)
    for seed in ("three", 1.0, True):
        (tmp_path / "b.json").write_text(json.dumps(record("plain", 0, [1.0]) | {"seed": seed}))
        with pytest.raises(AgqError, match=r"b\.json: row must be a name and seed a whole number"):
            table.load_records(tmp_path)


def test_a_record_of_another_config_stops_the_benchmark_before_any_worker(tmp_path):
    extra = [f"train.output_dir={tmp_path / 'runs'}"]
    runner = Runner(tmp_path / "records", extra, base=DIGITS)
    runner.records.mkdir()
    job = Job("plain", 0)
    cfg = runner.config(job).to_dict()
    runner.record_path(job).write_text(json.dumps({**record("plain", 0, [1.0]), "config": cfg}))
    runner.check_record(job)
    assert runner.done(job)
    cfg["train"] |= {"output_dir": str(tmp_path / "moved")}  # moving the run folders keeps the records
    runner.record_path(job).write_text(json.dumps({**record("plain", 0, [1.0]), "config": cfg}))
    runner.check_record(job)
    assert runner.done(job)
    cfg["train"]["pretrain_epochs"] += 1  # the setting's YAML edited after the run
    runner.record_path(job).write_text(json.dumps({**record("plain", 0, [1.0]), "config": cfg}))
    with pytest.raises(AgqError, match=r"plain_s0\.json was run with train\.pretrain_epochs="):
        accuracy.run_all(runner.records, extra, [Job(PRETRAIN, 0), job], 1, base=DIGITS)
    assert not runner.claims.exists()  # refused before any worker or claim
    runner.record_path(job).write_text(json.dumps(record("plain", 0, [1.0])))
    with pytest.raises(AgqError, match=r"plain_s0\.json is not a benchmark record"):
        runner.check_record(job)


def test_a_second_benchmark_on_one_output_dir_names_the_holder_and_an_unreaped_one_does_not_block(tmp_path):
    import os
    import re
    import subprocess
    import sys

    from agq.locks import LOCK, folder_lock

    runs = tmp_path / "runs"
    extra = [f"train.output_dir={runs}"]
    with folder_lock(runs, "train.output_dir"):
        held = rf"^{re.escape(str(runs))} is in use by pid {os.getpid()} .*train\.output_dir$"
        with pytest.raises(AgqError, match=held):
            accuracy.run_all(tmp_path / "records", extra, [Job(PRETRAIN, 0)], 1, base=DIGITS)
        assert not (runs / "claims").exists()  # refused before clearing or making any claim
    # a benchmark that died without being reaped (a zombie, as under an init that reaps nothing) left its
    # lock file naming a pid that still exists; the kernel released its lock at exit, so nothing waits
    code = (f"import os; from agq.locks import folder_lock\n"
            f"with folder_lock({str(runs)!r}, 'x'):\n    os._exit(0)")
    zombie = subprocess.Popen([sys.executable, "-c", code])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: its pid still exists
        assert json.loads((runs / LOCK).read_text())["pid"] == zombie.pid
        accuracy.run_all(tmp_path / "records", extra, [], 1, base=DIGITS)
        assert (runs / "claims").is_dir() and not (runs / LOCK).exists()
    finally:
        zombie.wait()


def test_records_or_trainer_states_of_another_cpu_stop_the_benchmark_before_any_worker(tmp_path):
    runs, records = tmp_path / "runs", tmp_path / "records"
    extra = [f"train.output_dir={runs}"]
    here = {k: accuracy.environment()[k] for k in accuracy.MACHINE_KEYS}
    records.mkdir()
    (records / "plain_s0.json").write_text(json.dumps(record("plain", 0, [1.0])))  # names no machine
    (records / "plain_s1.json").write_text(json.dumps({**record("plain", 1, [1.0]),
                                                       "environment": here}))
    older = {"cpu_capability": here["cpu_capability"]}  # a record from before the cpu key
    (records / "plain_s3.json").write_text(json.dumps({**record("plain", 3, [1.0]), "environment": older}))
    accuracy.run_all(records, extra, [], 1, base=DIGITS)
    assert json.loads((runs / accuracy.MACHINE).read_text()) == here
    for key in here:  # the same capability on another processor is another machine too
        (records / "plain_s2.json").write_text(json.dumps({**record("plain", 2, [1.0]),
                                                           "environment": here | {key: "OTHER"}}))
        with pytest.raises(AgqError, match=rf"plain_s2\.json was run on another machine \({key} 'OTHER';"):
            accuracy.run_all(records, extra, [], 1, base=DIGITS)
    (records / "plain_s2.json").unlink()
    (runs / accuracy.MACHINE).write_text(json.dumps(here | {"cpu": "OTHER"}))
    shutil.rmtree(runs / "claims")
    with pytest.raises(AgqError, match=rf"^{re.escape(str(runs))} holds trainer states made on another mach"):
        accuracy.run_all(records, extra, [], 1, base=DIGITS)
    assert not (runs / "claims").exists()  # refused before any claim
    assert json.loads((runs / accuracy.MACHINE).read_text())["cpu"] == "OTHER"  # left as it was


def test_sigterm_to_the_benchmark_stops_its_workers(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    config = tmp_path / "long.yaml"  # pre-training long enough to be running when the signal comes
    config.write_text(f"base: {DIGITS_ABS}\ntrain:\n  pretrain_epochs: 1000\n"
                      f"  output_dir: {tmp_path / 'runs'}\n")
    parent = subprocess.Popen([sys.executable, "-m", "agq.cli", "bench", "--only", "accuracy", "--config",
                               str(config), "--out", str(tmp_path / "out"), "--rows", "plain", "--seeds", "1",
                               "--ablation-seeds", "0", "--workers", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (workers := psutil.Process(parent.pid).children()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) == 1
    while not (tmp_path / "runs" / "pretrain_plain_s0").is_dir() and time.monotonic() < deadline:
        time.sleep(0.2)  # the worker is training
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert (parent.returncode, err.strip().splitlines()) == (143, ["agq bench: stopped by SIGTERM"])
    assert not workers[0].is_running()


def test_job_order_pretrains_first_then_the_core_rows_of_every_seed():
    keys = [j.key for j in jobs(2, 1)]
    assert keys[:4] == ["pretrain_plain_s0", "pretrain_residual_s0", "pretrain_plain_s1",
                        "pretrain_residual_s1"]
    trained = [r for r in ROWS if r.name not in PRETRAINED_ONLY]
    core = [r.name for r in trained if r.core]
    other = [r.name for r in trained if r.group == "main" and not r.core]
    ablations = [r.name for r in trained if r.group == "ablation"]
    expected = [f"{n}_s{s}" for s in (0, 1) for n in core] + [f"{n}_s{s}" for s in (0, 1) for n in other]
    assert keys[4:4 + len(expected)] == expected
    # ablations: one seed, after the pre-training of their own that AG-in-pre-training needs
    assert keys[4 + len(expected):] == ["pretrain_ag_pretrain_s0", *(f"{n}_s0" for n in ablations)]


def test_first_seed_shifts_every_seed_of_the_job_list():
    assert [j.key for j in jobs(1, 0, ["plain", "plain_ag"], first_seed=4)] == [
        "pretrain_plain_s4", "plain_s4", "plain_ag_s4"]
    assert [j.seed for j in jobs(2, 1, first_seed=3)] == [
        j.seed + 3 for j in jobs(2, 1)]


def test_every_row_is_a_valid_config_and_maps_back_to_itself():
    base = load_config(accuracy.BASE_CONFIG)
    for r in ROWS:
        if r.name in PRETRAINED_ONLY:
            continue
        cfg = load_config(accuracy.BASE_CONFIG, accuracy.row_overrides(r, 1, base.to_dict()))
        assert cfg.train.seed == 1 and cfg.train.epochs == base.train.epochs * r.epoch_factor
        assert row_of(cfg.to_dict(), base.train.epochs) == r.name


def test_the_weight_scale_domain_is_the_settings_unless_a_row_sets_it():
    for setting, expected in (([], "linear"), (["model.weight_scale=log"], "log")):
        base = load_config(accuracy.BASE_CONFIG, setting)
        for r in ROWS:
            if r.name in PRETRAINED_ONLY:
                continue
            cfg = load_config(accuracy.BASE_CONFIG, [*setting, *accuracy.row_overrides(r, 0, base.to_dict())])
            assert cfg.model.weight_scale == r.overrides.get("model.weight_scale", expected), r.name


def test_runs_that_share_the_log_domain_map_to_the_rows_of_a_log_setting():
    setting = ["model.weight_scale=log"]
    base = load_config(accuracy.BASE_CONFIG, setting)
    cfgs = {r.name: load_config(accuracy.BASE_CONFIG,
                                [*setting, *accuracy.row_overrides(r, 0, base.to_dict())]).to_dict()
            for r in ROWS if r.name not in PRETRAINED_ONLY}
    assert base_scale(list(cfgs.values())) == "log"
    for name, cfg in cfgs.items():
        expected = {"plain_log": "plain", "residual_log": "residual"}.get(name, name)  # one computation
        assert row_of(cfg, base.train.epochs, "log") == expected
    linear = load_config(accuracy.BASE_CONFIG).to_dict()
    assert base_scale([linear, cfgs["plain"]]) == "linear"
    assert row_of(cfgs["plain"], base.train.epochs, "linear") == "plain_log"  # mixed: log runs are *_log


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
    other["train"] |= {"output_dir": "elsewhere", "lr_schedule": "cosine"}  # a moved or renamed benchmark
    accuracy._check_shareable(cfg, other)
    other["train"]["pretrain_epochs"] += 1
    with pytest.raises(AgqError, match=r"train\.pretrain_epochs"):
        accuracy._check_shareable(cfg, other)
    other["train"]["pretrain_epochs"] -= 1
    other["model"]["widths"] = [8, 8, 8]
    with pytest.raises(AgqError, match=r"model\.widths"):
        accuracy._check_shareable(cfg, other)
    pretrained_h = json.loads(json.dumps(cfg))
    pretrained_h["ag"] |= {"enabled": True, "pretrain": True}
    row_cfg = json.loads(json.dumps(pretrained_h))
    accuracy._check_shareable(pretrained_h, row_cfg)
    row_cfg["ag"]["granularity"] = "layer"  # H was pre-trained: its shape must not change
    with pytest.raises(AgqError, match=r"ag\.granularity"):
        accuracy._check_shareable(pretrained_h, row_cfg)


def test_paired_difference_has_a_student_t_interval():
    records = [record("plain", s, [v]) for s, v in enumerate([90.0, 91.0, 95.0])]
    records += [record("plain_ag", s, [v]) for s, v in enumerate([91.0, 93.0, 96.0])]
    diff = table.paired(records)["plain_ag - plain"]
    assert diff["values"] == [1.0, 2.0, 1.0] and diff["std"] == pytest.approx(0.57735, abs=1e-5)
    assert diff["ci95"] == pytest.approx(4.302653 * 0.57735 / 3 ** 0.5, abs=1e-4)  # t(0.975, 2 dof)
    assert "[-0.10, +2.77]" in table.markdown(table.summary(records), "t", table.paired(records))


@pytest.mark.parametrize("method", ["plain_ag", "plain_ag_two_pass", "plain_ag_ssp", "plain_kd", "plain_aux"])
def test_each_method_and_the_convergence_test_are_paired_against_plain_residual_and_plain_2x(method):
    records = [record("residual", s, [v], arch="residual") for s, v in enumerate([98.0, 98.5])]
    rows = (("plain", [96.0, 97.25]), ("plain_2x", [97.0, 98.0]), (method, [97.5, 97.5]))
    records += [record(r, s, [v]) for r, vs in rows for s, v in enumerate(vs)]
    pairs = table.paired(records)
    assert pairs["residual - plain_2x"]["values"] == [1.0, 0.5]
    assert pairs[f"{method} - plain"]["values"] == [1.5, 0.25]
    assert pairs[f"residual - {method}"]["values"] == [0.5, 1.0]
    assert pairs[f"{method} - plain_2x"]["values"] == [0.5, -0.5]


def verdicts(rows: dict[str, list[float]]) -> str:
    """The report's table for the given rows' final top-1 per seed (residual's records of its own arch)."""
    records = [record(name, s, [v], arch="residual" if name == "residual" else "plain")
               for name, vs in rows.items() for s, v in enumerate(vs)]
    gaps = {m: table.gap_recovered(records, m) for m in table.GAP_METHODS}
    return table.markdown(table.summary(records), "t", table.paired(records), gaps)


def test_the_report_states_the_settings_outcome_and_which_rows_close_the_gap():
    converged = {"residual": [98.0, 98.2, 98.1], "plain": [97.0, 97.1, 97.0], "plain_2x": [97.0, 97.2, 96.9],
                 "plain_ag": [97.9, 98.0, 97.85], "plain_ag_two_pass": [97.3, 97.5, 97.2],
                 "plain_ag_ssp": [98.4, 97.0, 98.2], "ag_layer": [97.9, 98.0, 97.9]}
    md = verdicts(converged)
    assert "converged with a gap" in md and "not converged" not in md
    assert "- plain + AG (one pass): 83 % (seeds 0, 1, 2): closes the gap" in md
    assert "BN copied): 28 % (seeds 0, 1, 2): does not close the gap (under two thirds)" in md
    assert "W/A): 78 % (seeds 0, 1, 2): does not close the gap (interval against plain not above zero)" in md
    assert "layerwise AG (one pass): 84 % (seeds 0, 1, 2): closes the gap" in md  # an ablation, vs plain too
    # the difference the test reads, with its interval: [0.9, 0.9, 0.85], t(0.975, 2 dof) = 4.3027
    assert "(one pass): 83 % (seeds 0, 1, 2): closes the gap (at least two thirds, interval against plain " \
           "above zero); against plain +0.88 [+0.81, +0.96]" in md
    gains = {**converged, "plain_2x": [97.5, 97.6, 97.6]}
    assert "not converged (plain with twice the epochs still gains beyond noise" in verdicts(gains)
    no_gap = {**converged, "residual": [97.2, 96.9, 97.1]}
    assert "no gap shown (residual - plain not above zero)" in verdicts(no_gap)
    assert "closes the gap" not in verdicts(no_gap) and "not read: no gap shown" in verdicts(no_gap)
    assert "(residual - plain over 3 seeds (0, 1, 2), plain_2x - plain over 3 seeds (0, 1, 2))" in md


@pytest.mark.parametrize("seeds", [1, 2])
def test_neither_reading_is_made_from_fewer_than_three_seeds(seeds):
    """Two seeds of a clear gap would read "no gap shown" (t with one degree of freedom): the report must
    say it has not read the setting yet, and why, instead."""
    rows = {"residual": [98.0, 98.6], "plain": [97.0, 97.1], "plain_2x": [97.0, 97.2],
            "plain_ag": [97.9, 98.0]}
    md = verdicts({name: vs[:seeds] for name, vs in rows.items()})
    assert "no gap" not in md and "converged" not in md and "closes the gap" not in md
    listed = ", ".join(map(str, range(seeds)))
    assert (f"The setting is not read (residual - plain over {seeds} seed{'s' * (seeds > 1)} ({listed}),"
            f" plain_2x - plain over {seeds} seed") in md and "a reading needs 3 seeds of each" in md
    assert f"plain + AG (one pass): {[90, 72][seeds - 1]} % " in md
    assert "not read: under 3 seeds of the row with plain and residual" in md


def test_the_setting_reads_both_differences_over_the_seeds_they_share():
    """Over four seeds the gap is above zero, over the three that plain_2x has it is not: a lagging
    plain_2x row must not let the setting read "converged with a gap" from a gap of other seeds."""
    rows = {"residual": [97.3, 97.6, 98.0, 98.1], "plain": [97.0, 97.1, 97.0, 97.0],
            "plain_2x": [97.0, 97.2, 97.1]}
    four = table.difference(dict(enumerate(rows["residual"])), dict(enumerate(rows["plain"])))
    assert four["mean"] > 0.5
    assert verdict.above_zero(four) is True  # the premise: over all four seeds the gap is shown
    md = verdicts(rows)
    assert ("The setting, by the 95 % intervals below (residual - plain over 3 seeds (0, 1, 2), plain_2x - "
            "plain over 3 seeds (0, 1, 2)): no gap shown") in md
    assert "| residual - plain | 0.72 ± 0.39 | [+0.11, +1.34] |" in md  # the paired table: all four seeds
    assert "converged with a gap" in verdicts({**rows, "plain_2x": [*rows["plain_2x"], 97.1]})


def test_a_row_under_three_seeds_is_not_read_even_where_the_gap_has_three():
    rows = {"residual": [97.3, 96.9, 97.1], "plain": [97.0, 97.1, 97.0], "plain_ag": [97.9, 98.0]}
    md = verdicts(rows)  # residual - plain over three seeds: not above zero, but plain_ag has two
    assert "not read: no gap" not in md
    assert "plain + AG (one pass): 1800 % (seeds 0, 1): not read: under 3 seeds of the row" in md


def test_a_report_without_the_settings_rows_says_nothing_of_the_setting():
    assert "The setting" not in verdicts({"plain": [97.0, 97.1, 97.2], "plain_ag": [97.5, 97.4, 97.6]})


def test_every_ablation_row_is_paired_with_its_reference_and_every_pair_names_a_row():
    ablations = [r for r in ROWS if r.group == "ablation"]
    assert all(r.reference for r in ablations)  # an ablation without a reference would have no difference
    assert {(r.name, r.reference) for r in ablations} <= set(table.PAIRS)
    assert table.paired([record(r, 0, [v]) for r, v in (("ag_layer", 97.0), ("plain_ag", 96.5))]) == {
        "ag_layer - plain_ag": table.difference({0: 97.0}, {0: 96.5})}
    assert {n for pair in table.PAIRS for n in pair} <= {r.name for r in ROWS}
    ssp = [record(r, s, [v]) for r, vs in (("ssp_layer", [97.0, 97.5]), ("plain_ag_ssp", [96.0, 98.0]),
                                           ("ssp_block", [96.5, 97.0])) for s, v in enumerate(vs)]
    pairs = table.paired(ssp)  # each SSP fragment against blockdrop W/A; blockdrop W/A is no ablation row
    assert pairs["ssp_layer - plain_ag_ssp"]["values"] == [1.0, -0.5]
    assert pairs["ssp_block - plain_ag_ssp"]["values"] == [0.5, -1.0]
    assert ("ag_layer", "plain_ag_ssp") not in table.PAIRS  # layerwise AG runs without SSP
    log_rows = [record("residual_log", 0, [98.5], arch="residual"), record("plain_log", 0, [97.0])]
    log_gap = table.paired(log_rows)
    assert log_gap == {"residual_log - plain_log": table.difference({0: 98.5}, {0: 97.0})}


@pytest.mark.parametrize(("name", "pre"), [("plain_ag_ssp", "plain"), ("ag_pretrain", "ag_pretrain"),
                                          ("plain_log", "plain")])
def test_row_from_shared_pretraining_equals_the_row_trained_alone(tmp_path, name, pre):
    from agq.training.checkpoint import load_checkpoint
    from agq.training.loop import train

    extra = [f"train.output_dir={tmp_path / 'shared'}", "train.pretrain_epochs=1", "train.epochs=2"]
    runner = Runner(tmp_path / "records", extra, base=DIGITS)
    runner.records.mkdir()
    assert row(name).pretrain == pre
    runner.run(Job(PRETRAIN, 0, pre))
    shared = runner.run(Job(name, 0))
    alone_cfg = load_config(DIGITS, [*extra, f"train.output_dir={tmp_path / 'alone'}",
                                     *accuracy.row_overrides(row(name), 0, runner.base.to_dict())])
    alone = train(alone_cfg, progress=False)
    alone_history = json.loads((alone.parent / "metrics.json").read_text())
    assert table.differing_epoch(shared["history"], alone_history) is None
    if pre == "ag_pretrain":  # H was trained in pre-training: its accuracy is in the pre-training epoch
        assert shared["history"][0]["phase"] == "pretrain" and "test_H_top1" in shared["history"][0]
    a = load_checkpoint(runner.config(Job(name, 0)).run_dir / "checkpoint.pt")["model"]
    b = load_checkpoint(alone)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_pretraining_run_again_must_reproduce_its_record(tmp_path):
    import shutil

    extra = [f"train.output_dir={tmp_path / 'runs'}", "train.pretrain_epochs=2", "train.epochs=2"]
    runner = Runner(tmp_path / "records", extra, base=DIGITS)
    runner.records.mkdir()
    pre = Job(PRETRAIN, 0, "plain")
    first = runner.run(pre)
    assert first["environment"]["torch"] == torch.__version__  # floating point differs by machine
    run_dir = runner.config(pre).run_dir
    shutil.rmtree(run_dir)  # a fresh clone: the record is there, the trainer state is not
    assert not runner.done(pre)
    again = runner.run(pre)  # same config, same code: the same network
    assert table.differing_epoch(again["history"], first["history"]) is None
    shutil.rmtree(run_dir)
    tampered = {**first, "history": [first["history"][0], {**first["history"][1], "train_loss": 9.0}]}
    runner.record_path(pre).write_text(json.dumps(tampered))  # as if the old network had been another
    with pytest.raises(AgqError, match=r"pretrain_plain_s0\.json: pre-training run again .* at epoch 2"):
        runner.run(pre)
    assert json.loads(runner.record_path(pre).read_text()) == tampered  # the old record is kept
    assert not runner.done(pre) and not (run_dir / "last.pt").exists()  # no row may start from it


def test_a_resumed_run_counts_the_epochs_of_its_earlier_session(tmp_path):
    extra = [f"train.output_dir={tmp_path / 'runs'}", "train.pretrain_epochs=1", "train.epochs=2"]
    runner = Runner(tmp_path / "records", extra, base=DIGITS)
    runner.records.mkdir()
    runner.run(Job(PRETRAIN, 0))
    first = runner.run(Job("plain", 0))
    own = [e for e in first["history"] if e["phase"] == "finetune"]
    assert len(own) == 2 and first["epochs_s"] == round(sum(e["time_s"] + e["eval_s"] for e in own), 1)
    runner.record_path(Job("plain", 0)).unlink()  # cut after the last epoch, before the record
    again = runner.run(Job("plain", 0))  # resumes from last.pt: no epoch left; wall_s: this process only
    assert again["history"] == first["history"] and again["epochs_s"] == first["epochs_s"]


def test_an_interrupted_pretraining_resumes_from_its_own_state(tmp_path, monkeypatch):
    from agq.training.checkpoint import load_checkpoint

    from tests.test_training import run_until_killed

    def runner(name: str) -> Runner:
        extra = [f"train.output_dir={tmp_path / name}", "train.pretrain_epochs=3", "train.epochs=0"]
        return Runner(tmp_path / f"{name}_records", extra, base=DIGITS)

    whole, cut = runner("whole"), runner("cut")
    for r in (whole, cut):
        r.records.mkdir()
    pre = Job(PRETRAIN, 0)
    expected = whole.run(pre)
    run_until_killed(lambda: cut.run(pre), monkeypatch, kill_after=2)  # after epoch 2's last.pt
    done_before = load_checkpoint(cut.config(pre).run_dir / "last.pt")["trainer"]["history"]
    assert [e["epoch"] for e in done_before] == [1, 2] and not cut.done(pre)
    resumed = cut.run(pre)
    assert resumed["history"][:2] == done_before  # epochs 1-2 kept as run, timings included: not run again
    assert table.differing_epoch(resumed["history"], expected["history"]) is None
    assert len(resumed["history"]) == 3 and cut.done(pre)


def test_a_restarted_bench_finishes_a_part_way_job_first_and_logs_each_epoch(tmp_path, monkeypatch, capfd):
    from tests.test_training import run_until_killed

    extra = [f"train.output_dir={tmp_path / 'runs'}", "train.epochs=2"]
    runner = Runner(tmp_path / "records", extra, base=DIGITS)
    runner.records.mkdir()
    runner.run(Job(PRETRAIN, 0))
    run_until_killed(lambda: runner.run(Job("plain_ag", 0)), monkeypatch, kill_after=1)  # epoch 1 of 2
    todo = jobs(1, 0, ["plain", "plain_ag"])  # the bench's order: plain before plain_ag
    assert [j.key for j in todo] == ["pretrain_plain_s0", "plain_s0", "plain_ag_s0"]
    assert [j.key for j in accuracy.resume_order(runner, todo)] == [
        "plain_ag_s0", "pretrain_plain_s0", "plain_s0"]
    capfd.readouterr()
    accuracy.run_all(runner.records, extra, todo, 1, base=DIGITS)
    log = capfd.readouterr().out
    assert re.findall(r"^\[worker 0\] (\S+): test top-1", log, re.M) == ["plain_ag_s0", "plain_s0"]
    # a line per epoch, named by worker and job: the resumed run's second epoch, then the new run's two
    assert re.findall(r"^\[worker 0\] (\S+): phase=finetune epoch=(\d) .* test_F_top1=", log, re.M) == [
        ("plain_ag_s0", "2"), ("plain_s0", "1"), ("plain_s0", "2")]
    assert all(runner.done(j) for j in todo)
    assert accuracy.resume_order(runner, todo) == todo  # nothing part-way: the bench's order


def test_a_pretraining_is_run_again_only_while_a_row_of_it_is_unrecorded(tmp_path):
    runner = Runner(tmp_path / "records", [f"train.output_dir={tmp_path / 'runs'}"], base=DIGITS)
    runner.records.mkdir()
    todo = jobs(2, 0, ["plain", "plain_ag", "residual"])
    for job in (Job(PRETRAIN, 0), Job("plain", 0), Job("plain_ag", 0), Job("residual", 1)):
        runner.record_path(job).write_text("{}")  # a fresh clone: records, no trainer state
    need = {j.key for j in todo if runner.needed(j, todo)}
    assert not runner.done(Job(PRETRAIN, 0))
    assert "pretrain_plain_s0" not in need  # both its rows are recorded
    assert {"pretrain_plain_s1", "pretrain_residual_s0", "residual_s0"} <= need
    assert "pretrain_residual_s1" not in need
    assert "pretrain_plain_s0" in {j.key for j in todo if runner.needed(j, [*todo, Job("plain_kd", 0)])}


def test_rows_paired_by_a_pretraining_must_carry_the_same_one():
    from agq.bench import report

    pre = {**record(PRETRAIN, 0, [], 97.0), "pretrain": "plain"}
    plain = record("plain", 0, [90.0], 97.0)
    plain["history"][0]["time_s"] = 12.0  # timings differ run to run and are not compared
    residual = record("residual", 0, [95.0], 98.0, arch="residual")  # its own pre-training
    table.check_shared_starts([pre, plain, residual, record("plain_ag", 0, [91.0], 97.0)])
    with pytest.raises(AgqError, match=r"records pretrain_plain_s0 and plain_ag_s0 started from different "
                                       r"plain pre-trainings \(they differ at pre-training epoch 1\)"):
        report.write_accuracy([pre, plain, residual, record("plain_ag", 0, [91.0], 97.5)], Path("."), "t")


def test_report_only_rebuilds_the_tables_without_training(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed, (p, r) in enumerate([(90.0, 95.0), (91.0, 95.5)]):
        (runs / f"plain_s{seed}.json").write_text(json.dumps(record("plain", seed, [p])))
        residual = record("residual", seed, [r], arch="residual")
        (runs / f"residual_s{seed}.json").write_text(json.dumps(residual))
    assert main(["bench", "--only", "report", "--out", str(tmp_path)]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "| residual - plain | 4.75 ± 0.35 |" in readme
    assert not (tmp_path / "cost.json").exists() and sorted(p.name for p in runs.iterdir()) == [
        "plain_s0.json", "plain_s1.json", "residual_s0.json", "residual_s1.json"]


def test_bn_stability_gives_every_record_its_range_and_running_averages_where_recorded(tmp_path, capsys):
    """Final top-1 and the range over the last 10 epochs as training scored them; a record that also scored
    with BN's running averages (every_epoch re-estimation) has those beside, one that did not has none; a
    run shorter than 10 epochs has no such window and is left out."""
    runs = tmp_path / "runs"
    runs.mkdir()
    recalibrated = [90.0] * 8 + [94.0, 95.0, 94.5, 95.5]
    running = [90.0, 94.0, 20.0] + [94.0] * 8 + [60.0]  # the last 10 epochs span 20.0 .. 94.0
    both = record("plain", 4, recalibrated)
    finetune = [h for h in both["history"] if h["phase"] == "finetune"]
    for h, v in zip(finetune, running, strict=True):
        h["running_bn_test_F_top1"] = v
    (runs / "plain_s4.json").write_text(json.dumps(both))
    (runs / "plain_s3.json").write_text(json.dumps(record("plain", 3, running)))
    (runs / "plain_s2.json").write_text(json.dumps(record("plain", 2, running[:9])))
    assert main(["bench", "--only", "report", "--out", str(tmp_path)]) == 0
    steady = json.loads((tmp_path / "accuracy.json").read_text())["bn_stability"]
    assert steady == [{"row": "plain", "seed": 3, "last_epochs": 10,
                       "scored": {"final": 60.0, "range_last": 74.0}, "running": None},
                      {"row": "plain", "seed": 4, "last_epochs": 10,
                       "scored": {"final": 95.5, "range_last": 5.5},
                       "running": {"final": 60.0, "range_last": 74.0}}]
    readme = (tmp_path / "README.md").read_text()
    assert "| plain 2-bit | 3 | 60.00 | 74.00 | - | - |" in readme
    assert "| plain 2-bit | 4 | 95.50 | 5.50 | 60.00 | 74.00 |" in readme


def _setting(folder, epochs: int, rows: dict[str, list], lr: float = 1e-3) -> None:
    """A results folder of one setting: each row's final top-1 per seed (or its fine-tuning epochs' top-1),
    configs as agq bench writes them."""
    runs = folder / "runs"
    runs.mkdir(parents=True)
    for name, values in rows.items():
        length = epochs * row(name).epoch_factor
        for seed, value in enumerate(values):
            rec = record(name, seed, value if isinstance(value, list) else [value], arch=row(name).arch)
            rec["config"] = {"name": f"{name}_s{seed}", "model": {"arch": row(name).arch},
                             "ssp": {"decay_epochs": round(accuracy.SSP_DECAY_FRACTION * length, 4)},
                             "train": {"epochs": length, "seed": seed, "lr": lr, "output_dir": str(folder)}}
            (runs / f"{name}_s{seed}.json").write_text(json.dumps(rec))


def test_convergence_pairs_lengths_across_settings_and_checks_shared_runs(tmp_path, capsys):
    from agq.bench import convergence

    _setting(tmp_path / "short", 2, {"plain": [90.0, 91.0, 92.0], "plain_2x": [93.0, 93.0, 95.0],
                                     "residual": [96.0, 96.5, 97.0]})
    ten_epochs = [80.0, 90.0, 91.0, 92.0, 92.0, 93.0, 93.5, 93.5, 94.0, 93.5]  # last five: std sqrt(0.125)
    _setting(tmp_path / "long", 4, {"plain": [93.0, 93.0, 95.0], "plain_2x": [ten_epochs, 92.0, 95.0]})
    folders = {"short": tmp_path / "short", "long": tmp_path / "long"}
    md = convergence.write(folders, tmp_path / "out")
    result = json.loads((tmp_path / "out" / "convergence.json").read_text())
    plain = result["curves"]["plain"]
    assert sorted(plain, key=int) == ["2", "4", "8"] and result["shared_runs"] == 3  # plain_2x(2) = plain(4)
    assert plain["4"]["gain"]["values"] == [3.0, 2.0, 3.0] and plain["4"]["previous"] == 2
    assert plain["8"]["gain"]["values"] == [0.5, -1.0, 0.0]
    assert result["gap"]["2"]["values"] == [6.0, 5.5, 5.0] and list(result["gap"]) == ["2"]
    assert result["twice"]["2"]["values"] == [-3.0, -3.5, -2.0]  # plain at 4 epochs - residual at 2
    assert plain["8"]["spread"]["values"] == [pytest.approx(0.125 ** 0.5)] and plain["4"]["spread"] is None
    assert "| 2 | 5.50 ± 0.50 [+4.26, +6.74] | +6.00, +5.50, +5.00 | -2.83 ± 0.76 [-4.73, -0.94] |" in md
    assert ("| plain | 8 | 93.50 ± 1.50 | 3 | vs 4: -0.17 ± 0.76 [-2.06, +1.73] | +0.50, -1.00, +0.00 | "
            "0.35 (0.35) |") in md
    convergence.write(dict(reversed(folders.items())), tmp_path / "out")  # the same inputs: read again
    assert json.loads((tmp_path / "out" / "convergence.json").read_text())["curves"] == result["curves"]
    kept = {f.name: f.read_bytes() for f in (tmp_path / "out").iterdir()}
    with pytest.raises(AgqError, match=r"out/convergence\.json holds the reading of \['long', 'short'\], "
                                       r"not of \['short'\]: give --out"):
        convergence.write({"short": tmp_path / "short"}, tmp_path / "out")
    assert {f.name: f.read_bytes() for f in (tmp_path / "out").iterdir()} == kept
    (tmp_path / "out" / "convergence.json").write_text('{"pairs": []}')  # another kind of reading
    with pytest.raises(AgqError, match=r"is not a reading of this kind"):
        convergence.write(folders, tmp_path / "out")
    (tmp_path / "out" / "convergence.json").write_text('{"settings": ')  # cut short
    with pytest.raises(AgqError, match=r"convergence\.json is not valid JSON \(.*\); restore it"):
        convergence.write(folders, tmp_path / "out")
    assert (tmp_path / "out" / "convergence.json").read_text() == '{"settings": '

    _setting(tmp_path / "other", 4, {"plain": [93.0, 93.1, 95.0]})  # seed 1 differs from short's plain_2x
    with pytest.raises(AgqError, match=r"setting other: plain at 4 epochs, seed 1, gives 93.1 but 93.0"):
        convergence.write({"short": tmp_path / "short", "other": tmp_path / "other"}, tmp_path / "out2")
    _setting(tmp_path / "lr", 4, {"plain": [93.0, 93.0, 95.0]}, lr=1e-2)
    with pytest.raises(AgqError, match=r"short and lr differ in config key train\.lr \(0\.001 vs 0\.01\)"):
        convergence.write({"short": tmp_path / "short", "lr": tmp_path / "lr"}, tmp_path / "out3")
    _setting(tmp_path / "rerun", 4, {"plain": [93.0, 93.0, 95.0]})
    rerun = tmp_path / "rerun" / "runs" / "plain_s2.json"
    rec = json.loads(rerun.read_text())
    rec["history"][0]["test_F_top1"] = 51.0  # seed 2's pre-training run again elsewhere: another network
    rerun.write_text(json.dumps(rec))
    with pytest.raises(AgqError, match=r"records setting short: record plain_2x_s2 and setting rerun: record "
                                       r"plain_s2 started from different plain pre-trainings .* epoch 1"):
        convergence.write({"short": tmp_path / "short", "rerun": tmp_path / "rerun"}, tmp_path / "out5")
    _setting(tmp_path / "bad", 4, {"plain": [93.0]})
    broken = tmp_path / "bad" / "runs" / "plain_s0.json"
    rec = json.loads(broken.read_text())
    rec["config"]["train"]["epochs"] = -1
    broken.write_text(json.dumps(rec))
    with pytest.raises(AgqError, match=r"setting bad: record plain_s0: .*train\.epochs"):
        convergence.write({"short": tmp_path / "short", "bad": tmp_path / "bad"}, tmp_path / "out4")
    assert not any((tmp_path / f"out{k}").exists() for k in (2, 3, 4, 5))
    assert main(["bench", "--only", "convergence"]) == 2
    assert "--only convergence needs --settings" in capsys.readouterr().err


def test_across_pairs_a_row_of_two_settings_by_seed_only_from_one_pretrained_network(tmp_path, capsys):
    _setting(tmp_path / "a", 2, {"plain": [91.0, 92.5, 93.0]}, lr=1e-2)
    _setting(tmp_path / "b", 2, {"plain": [90.0, 92.0], "residual": [96.0, 96.5]})
    a, b = f"{tmp_path / 'a'}:plain", f"{tmp_path / 'b'}:plain"
    assert main(["bench", "--only", "across", "--pair", a, b, "--out", str(tmp_path / "out")]) == 0
    (pair,) = json.loads((tmp_path / "out" / "across.json").read_text())["pairs"]
    assert pair["difference"]["values"] == [1.0, 0.5] and pair["difference"]["seeds"] == [0, 1]
    assert pair["varied"] == {"train.lr": [1e-2, 1e-3]}  # names, seeds and folders are not what was varied
    row_md = "| 0.75 ± 0.35 | [-2.43, +3.93] | +1.00, +0.50 | 0, 1 | - | train.lr: 0.01 vs 0.001 |"
    assert row_md in capsys.readouterr().out
    assert main(["bench", "--only", "across", "--pair", b, a, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # b - a is another reading: the folder keeps a - b
    assert "across.json holds the reading of" in err and err.count("\n") == 1, err
    assert json.loads((tmp_path / "out" / "across.json").read_text())["pairs"] == [pair]

    other = tmp_path / "b" / "runs" / "plain_s1.json"
    rec = json.loads(other.read_text())
    rec["history"][0]["test_F_top1"] = 49.0  # seed 1 of b started from another pre-trained network
    other.write_text(json.dumps(rec))
    residual = f"{tmp_path / 'b'}:residual"
    for pair_args, message in (([a, b], "seed 1 started from different pre-trained networks"),
                               ([a, residual], "different pre-trainings (plain vs residual)"),
                               ([a, f"{tmp_path / 'b'}:plain_ag"], "no finished record of that row"),
                               ([a, "plain"], "expected SETTING:ROW"),
                               ([a, f"{tmp_path / 'c'}:plain"], "has no runs/ of records")):
        assert main(["bench", "--only", "across", "--pair", *pair_args, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    no_config = tmp_path / "b" / "runs" / "residual_s0.json"
    rec = json.loads(no_config.read_text())
    del rec["config"]
    no_config.write_text(json.dumps(rec))
    assert main(["bench", "--only", "across", "--pair", residual, a, "--out", str(tmp_path / "bad")]) == 2
    assert "record residual_s0 in" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(["bench", "--only", "across"]) == 2
    assert "--only across needs --pair" in capsys.readouterr().err


def test_across_pools_pairs_run_apart_each_seed_from_the_one_pair_that_has_it(tmp_path, capsys):
    _setting(tmp_path / "a", 2, {"plain": [91.0, 92.5, 93.0]}, lr=1e-2)
    _setting(tmp_path / "b", 2, {"plain": [90.0, 92.0]})
    # seed 2 run again on another machine: both rows in folders of their own, from another pre-training
    for name, value, lr in (("a2", 95.0, 1e-2), ("b2", 94.0, 1e-3)):
        _setting(tmp_path / name, 2, {"plain": [0.0, 0.0, value]}, lr=lr)
        for path in (tmp_path / name / "runs").glob("plain_s*.json"):
            rec = json.loads(path.read_text())
            if rec["seed"] != 2:
                path.unlink()
                continue
            rec["history"][0]["test_F_top1"] = 60.0
            rec["environment"] = {"cpu_capability": "AVX2", "cpu": "AuthenticAMD family 25 model 1"}
            path.write_text(json.dumps(rec))
    pairs = [f"{tmp_path / 'a'}:plain", f"{tmp_path / 'b'}:plain", f"{tmp_path / 'a2'}:plain",
             f"{tmp_path / 'b2'}:plain"]
    args = ["bench", "--only", "across", "--pair", *pairs[:2], "--pair", *pairs[2:], "--pool"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "across.json").read_text())
    assert [p["difference"]["seeds"] for p in result["pairs"]] == [[0, 1], [2]]
    pooled = result["pooled"]
    assert pooled["difference"]["seeds"] == [0, 1, 2] and pooled["difference"]["values"] == [1.0, 0.5, 1.0]
    assert pooled["a_top1"]["values"] == [91.0, 92.5, 95.0] and pooled["varied"] == {"train.lr": [1e-2, 1e-3]}
    assert pooled["difference"] == table.difference({0: 91.0, 1: 92.5, 2: 95.0}, {0: 90.0, 1: 92.0, 2: 94.0})
    machine = "AVX2 (AuthenticAMD family 25 model 1)"
    assert pooled["cpu_capability"] == ["-", machine] and result["pairs"][1]["cpu_capability"] == [machine]
    row = f"| +1.00, +0.50, +1.00 | 0, 1, 2 | -, {machine} | train.lr: 0.01 vs 0.001 |"
    assert row in capsys.readouterr().out

    _setting(tmp_path / "c", 2, {"plain": [91.0, 92.5, 93.0]})  # varies nothing against b
    for name, lr in (("r", 1e-2), ("r2", 1e-3)):
        _setting(tmp_path / name, 2, {"residual": [96.0]}, lr=lr)
    for extra, message in ((["--pair", *pairs[:2]], "seed 0 is in both"),
                           (["--pair", f"{tmp_path / 'r'}:residual", f"{tmp_path / 'r2'}:residual"],
                            "compares rows residual - residual but"),
                           (["--pair", f"{tmp_path / 'c'}:plain", pairs[1]], "varies [] but"),
                           ([], "--pool needs two or more --pair")):
        assert main([*args[:4], *pairs[:2], *extra, "--pool", "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()


def test_bn_sensitivity_scores_the_saved_statistics_as_training_did(tmp_path, capsys):
    """The part reads each fine-tuned run's checkpoint.pt; scored with its saved statistics, F gives the
    run's own last test top-1; the other scores are percentages; no run folder is one line."""
    from agq.bench import bn_sensitivity

    out = tmp_path / "runs"
    with pytest.raises(AgqError, match="needs fine-tuned runs"):
        bn_sensitivity.measure(out)
    assert main(["train", "--config", DIGITS, "--no-progress", "--set", f"train.output_dir={out}",
                 "--set", "train.pretrain_epochs=1", "--set", "train.epochs=1", "--set",
                 "data.limit_train=256", "--set", "ssp.enabled=false"]) == 0
    report = bn_sensitivity.measure(out)
    (name, scores), = report["runs"].items()
    last = json.loads((out / name / "metrics.json").read_text())[-1]
    assert scores["saved"] == pytest.approx(last["test_F_top1"])
    assert len(scores["reestimated_32_batches"]) == bn_sensitivity.DRAWS
    values = [scores["test_batch_statistics"], scores["reestimated_all_batches"],
              *scores["reestimated_32_batches"]]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert len(scores["blank_image_level_changes"]) == bn_sensitivity.DRAWS + 1
    assert f"| {name} | {scores['saved']:.2f} |" in bn_sensitivity.markdown(report)


def test_bn_sensitivity_measures_only_the_chosen_jobs(tmp_path, monkeypatch, capsys):
    """--rows (with --seeds, --first-seed) picks which runs the part scores; a choice with no run is one
    line naming it. sensitivity() is replaced by fixed scores: this is about selection."""
    from agq.bench import bn_sensitivity
    from agq.training.bn_recalibration import CALIBRATION_BATCHES

    runs = tmp_path / "runs"
    for name in ("plain_ag_ssp_s3", "plain_ag_ssp_s4", "plain_s3", "pretrain_plain_s3"):
        (runs / name).mkdir(parents=True)
        (runs / name / "checkpoint.pt").write_bytes(b"")
    scores = {"saved": 90.0, "test_batch_statistics": 98.0,
              f"reestimated_{CALIBRATION_BATCHES}_batches": [97.0], "reestimated_all_batches": 81.0,
              "channels_with_variance_under_eps": {},
              "blank_image_near_threshold": {}, "blank_image_level_changes": [3, 4]}
    measured: list[str] = []
    monkeypatch.setattr(bn_sensitivity, "sensitivity",
                        lambda path: measured.append(path.parent.name) or scores)
    assert list(bn_sensitivity.measure(runs)["runs"]) == ["plain_ag_ssp_s3", "plain_ag_ssp_s4", "plain_s3"]
    assert list(bn_sensitivity.measure(runs, {"plain_ag_ssp_s3"})["runs"]) == ["plain_ag_ssp_s3"]
    with pytest.raises(AgqError, match="fine-tuned runs of plain_ag_s3 in"):
        bn_sensitivity.measure(runs, {"plain_ag_s3"})

    config = tmp_path / "setting.yaml"
    config.write_text(f"base: {DIGITS_ABS}\ntrain:\n  output_dir: {runs}\n")
    out = tmp_path / "results"
    assert main(["bench", "--only", "bn_sensitivity", "--config", str(config), "--out", str(out),
                 "--rows", "plain_ag_ssp", "--first-seed", "3", "--seeds", "1"]) == 0
    assert list(json.loads((out / "bn_sensitivity.json").read_text())["runs"]) == ["plain_ag_ssp_s3"]
    assert main(["bench", "--only", "bn_sensitivity", "--config", str(config), "--out", str(out),
                 "--rows", "plain_ag", "--first-seed", "3", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plain_ag_s3" in err[0]
    assert list(json.loads((out / "bn_sensitivity.json").read_text())["runs"]) == ["plain_ag_ssp_s3"]

    # a later choice adds to the scores already there, also where an earlier run's checkpoint is gone
    (runs / "plain_ag_ssp_s3" / "checkpoint.pt").unlink()
    scores["saved"] = 97.5
    assert main(["bench", "--only", "bn_sensitivity", "--config", str(config), "--out", str(out),
                 "--rows", "plain", "--first-seed", "3", "--seeds", "1"]) == 0
    kept = json.loads((out / "bn_sensitivity.json").read_text())["runs"]
    assert list(kept) == ["plain_ag_ssp_s3", "plain_s3"]
    assert kept["plain_ag_ssp_s3"]["saved"] == 90.0 and kept["plain_s3"]["saved"] == 97.5

    (out / "bn_sensitivity.json").write_text('{"plain_s3": 1}')
    before = len(measured)
    assert main(["bench", "--only", "bn_sensitivity", "--config", str(config), "--out", str(out),
                 "--rows", "plain", "--first-seed", "3", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bn_sensitivity.json has no 'runs' table" in err[0]
    assert (out / "bn_sensitivity.json").read_text() == '{"plain_s3": 1}'
    assert len(measured) == before  # the broken file stopped it before any run was measured
    (out / "bn_sensitivity.json").write_text('{"runs": ')  # cut short: running again would meet it too
    assert main(["bench", "--only", "bn_sensitivity", "--config", str(config), "--out", str(out),
                 "--rows", "plain", "--first-seed", "3", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bn_sensitivity.json is not valid JSON" in err[0] and "restore it" in err[0]
    assert len(measured) == before


def test_the_ablation_tables_compare_variants_on_the_seeds_they_share():
    records = [record("plain", s, [v]) for s, v in enumerate([97.0, 97.2, 97.4])]
    records += [record("plain_ag", s, [v]) for s, v in ((1, 98.0), (2, 98.2))]
    md = table.markdown(table.summary(records), "t")
    assert "| variant | top-1 % (F), all seeds | seeds | top-1 % on seeds [1, 2] |" in md
    assert "| no AG | 97.20 ± 0.20 | 3 | 97.30 |" in md  # seeds 1 and 2 only: (97.2 + 97.4) / 2
    disjoint = [*records[:1], record("plain_ag", 4, [98.0])]
    assert "| no AG | 97.00 | 1 | - |" in table.markdown(table.summary(disjoint), "t")


def test_a_blank_image_value_near_a_rounding_threshold_is_listed_and_its_level_change_counted():
    """BN of F's first pre-activation layer set to put a blank image's channel 0 at 0.49 steps (listed,
    rounds to 0), then 0.51 (listed, rounds to 1: one change there); the other channels sit at 2 steps.
    The count over all layers takes in what the change does downstream."""
    from agq.bench import bn_sensitivity
    from agq.training.models import build_model

    model = build_model(load_config(DIGITS).model)
    name, layer = next((n, m) for n, m in model.named_modules() if hasattr(m, "bn") and hasattr(m, "act"))
    blank = torch.zeros(1, 1, 8, 8)
    scale = float(layer.act.act_quant.scale().detach())

    def place(value: float) -> dict:
        with torch.no_grad():
            layer.bn.weight.zero_()  # the BN output is its bias alone, whatever the image
            layer.bn.bias.fill_(2.0 * scale)
            layer.bn.bias[0] = value * scale
        return bn_sensitivity.blank_image_grid(model, blank)

    low, high = place(0.49), place(0.51)
    first = f"{name}.act"
    assert bn_sensitivity.near_thresholds(low)[first] == [[0, 0.49]]
    assert bn_sensitivity.near_thresholds(high)[first] == [[0, 0.51]]
    assert bn_sensitivity.changed(low, low) == 0
    assert (low[first][1][0], high[first][1][0]) == (0, 1)  # Brevitas' own rounding of 0.49 and 0.51
    assert bn_sensitivity.changed({first: low[first]}, {first: high[first]}) == 1
    assert bn_sensitivity.changed(low, high) >= 1
    assert first not in bn_sensitivity.near_thresholds(place(0.3))


def test_status_names_each_jobs_state_and_the_training_left_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from agq.bench import status
    from agq.training.checkpoint import load_checkpoint

    from agq.locks import folder_lock
    from tests.test_training import run_until_killed

    setting = tmp_path / "setting.yaml"
    setting.write_text(f"base: {DIGITS_ABS}\ntrain:\n  output_dir: {tmp_path / 'runs'}\n  epochs: 2\n")
    runner = Runner(tmp_path / "out" / "runs", [], base=setting)
    runner.records.mkdir(parents=True)
    todo = jobs(2, 0, ["plain"])
    runner.run(Job(PRETRAIN, 0))
    plain = runner.run(Job("plain", 0))
    run_until_killed(lambda: runner.run(Job(PRETRAIN, 1)), monkeypatch, kill_after=1)
    cut = load_checkpoint(runner.config(Job(PRETRAIN, 1)).run_dir / "last.pt")["trainer"]["history"]

    found, running = status.statuses(runner, todo)
    assert running is None
    assert [(s.job.key, s.state, s.done, s.total) for s in found] == [
        ("pretrain_plain_s0", "recorded", 2, 2), ("pretrain_plain_s1", "stopped", 1, 2),
        ("plain_s0", "recorded", 2, 2), ("plain_s1", "waiting", 0, 2)]
    assert found[1].top1 == cut[0]["test_F_top1"]
    own_pace = cut[0]["time_s"] + cut[0]["eval_s"]
    plain_pace = statistics.fmean(e["time_s"] + e["eval_s"] for e in plain["history"]
                                  if e["phase"] == "finetune")
    assert status.left_seconds(found) == (pytest.approx(own_pace + 2 * plain_pace), 0)

    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["bench", "--only", "status", "--config", str(setting), "--out", str(tmp_path / "out"),
                 "--rows", "plain", "--seeds", "2"]) == 0
    shown = capsys.readouterr().out
    assert ("2 of 7 jobs recorded, 3 pre-trainings not needed (no row left to start from it); "
            "no benchmark running") in shown  # seeds 2-4 of --ablation-seeds 5: no row of them asked
    top1 = f"{cut[0]['test_F_top1']:.2f}"
    assert re.search(rf"^  stopped +pretrain_plain_s1 +epoch 1/2, test top-1 {top1} %, [0-9.]+ s per epoch$",
                     shown, re.M)
    assert re.search(r"^  waiting +plain_s1 +epoch 0/2$", shown, re.M)
    assert re.search(r"^left: about 0\.0 core-hours \(0\.0 h on 2 workers\)$", shown, re.M)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # reads only

    with folder_lock(tmp_path / "runs", "train.output_dir"):  # a benchmark holds the folder ...
        runner.claim(Job(PRETRAIN, 1))  # ... and one of its workers this job
        found, running = status.statuses(runner, todo)
        assert running is not None and f"pid {os.getpid()}" in running
        assert found[1].state == "running"
    assert status.statuses(runner, todo)[0][1].state == "stopped"  # the claim outlives its benchmark

    never_timed, _ = status.statuses(runner, jobs(1, 0, ["plain_ag"]))
    assert [(s.job.key, s.state) for s in never_timed] == [("pretrain_plain_s0", "recorded"),
                                                            ("plain_ag_s0", "waiting")]
    assert status.left_seconds(never_timed) == (0.0, 1)
    assert status.render(never_timed, None, 2, tmp_path).endswith("plus 1 job of rows not timed yet")
    first, second = (status.JobStatus(Job("plain_ag", seed), state, done, 10, None, pace)
                     for seed, state, done, pace in ((0, "running", 4, 20.0), (1, "waiting", 0, None)))
    assert status.left_seconds([first, second]) == (20.0 * 6 + 20.0 * 10, 0)  # a new row: its run under way
    done = status.JobStatus(Job("plain_ag", 2), "recorded", 10, 10, 97.0, 30.0)
    assert status.left_seconds([first, second, done]) == (20.0 * 6 + 30.0 * 10, 0)  # a recorded run first


def _records_of(folder: Path, config: Path, rows: dict[str, list[float]], pretrain: float = 50.0) -> None:
    """Records of ``rows`` (final top-1 per seed) in ``folder``/runs with the configs the bench gives them
    under ``config``, from one machine and training code."""
    runs = folder / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    runner = Runner(runs, [], config)
    for name, values in rows.items():
        for seed, value in enumerate(values):
            rec = record(name, seed, [value], pretrain, arch=row(name).arch)
            rec |= {"config": runner.config(Job(name, seed)).to_dict(), "training_code_sha256": "code",
                    "environment": {"cpu_capability": "AVX512", "cpu": "cpu"}}
            (runs / f"{name}_s{seed}.json").write_text(json.dumps(rec))


def test_a_borrowed_row_is_read_from_the_other_settings_records_only_if_they_are_its_runs(
        tmp_path, capsys, monkeypatch):
    """Plan (11)'s plain (4 epochs here) is plan (9)'s plain_2x: borrowed, the longer setting's report
    reads its gap and outcome; a record that is not the run, a seed twice, the folder's own row, another
    pre-trained network, machine or training code, nothing here to check against, and a source changed or
    gone since are each one line, and nothing is written."""
    configs = {}
    for name, epochs in (("short", 2), ("long", 4)):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(f"base: {DIGITS_ABS}\nssp:\n  decay_epochs: 1\ntrain:\n  epochs: {epochs}\n"
                                 f"  output_dir: {tmp_path / name}_runs\n")
    short, long = tmp_path / "short", tmp_path / "long"
    _records_of(short, configs["short"], {"plain": [90.0, 91.0, 92.0], "plain_2x": [92.0, 92.5, 94.0]})
    _records_of(long, configs["long"], {"residual": [95.0, 95.5, 96.0], "plain_ag": [93.0, 93.5, 94.5]})
    args = ["bench", "--config", str(configs["long"]), "--out", str(long)]
    specs = ["--borrow", f"plain={short}:plain_2x", "--borrow", f"residual={short}:plain_2x"]
    assert main([*args, "--only", "borrow", *specs]) == 2  # the second fails: the first is not written
    assert "has records of row residual of its own" in capsys.readouterr().err
    assert not (long / "borrowed.json").exists() and not (long / "README.md").exists()
    assert main([*args, "--only", "borrow", *specs[:2]]) == 0
    borrowed = json.loads((long / "borrowed.json").read_text())
    assert borrowed["plain"]["setting"] == "../short" and sorted(borrowed["plain"]["records"]) == [
        "plain_2x_s0.json", "plain_2x_s1.json", "plain_2x_s2.json"]
    accuracy_json = json.loads((long / "accuracy.json").read_text())
    assert accuracy_json["rows"]["plain"]["test_F_top1"]["values"] == [92.0, 92.5, 94.0]
    readme = (long / "README.md").read_text()
    assert "| residual - plain | 2.67 ± 0.58 | [+1.23, +4.10] | +3.00, +3.00, +2.00 |" in readme
    share = "- plain + AG (one pass): 31 % (seeds 0, 1, 2): does not close the gap (under two thirds)"
    assert share in readme and "from the files in this folder and the records its borrowed.json" in readme
    assert "plain = the records of plain_2x in ../short (relative to this folder; seeds 0, 1, 2)" in readme
    assert sorted(p.name for p in (long / "runs").iterdir()) == [
        *(f"plain_ag_s{s}.json" for s in range(3)), *(f"residual_s{s}.json" for s in range(3))]
    kept = {p.name: p.read_bytes() for p in long.iterdir() if p.is_file()}
    kept_source = (short / "runs" / "plain_2x_s2.json").read_bytes()

    other = tmp_path / "other"  # seed 0 from another pre-trained network
    _records_of(other, configs["short"], {"plain_2x": [92.0]}, pretrain=49.0)
    twice = tmp_path / "twice"
    _records_of(twice, configs["short"], {"plain_2x": [92.0]})
    shutil.copy(twice / "runs" / "plain_2x_s0.json", twice / "runs" / "plain_2x_s0_again.json")
    for name, key, value in (("machine", "environment", {"cpu_capability": "AVX512", "cpu": "another cpu"}),
                             ("code", "training_code_sha256", "other code"), ("bare", "environment", {})):
        _records_of(tmp_path / name, configs["short"], {"plain_2x": [92.0, 92.5]})
        moved = tmp_path / name / "runs" / "plain_2x_s1.json"
        moved.write_text(json.dumps(json.loads(moved.read_text()) | {key: value}))
    for spec, message in ((f"plain={short}:plain", "plain_s0.json is not the run row plain is here: config "
                                                   "key ssp.decay_epochs is 1.1429 there, 2.2857 here"),
                          (f"residual={short}:plain_2x", "has records of row residual of its own"),
                          (f"plain={other}:plain_2x", "started from different plain pre-trainings"),
                          (f"plain={twice}:plain_2x", f"{twice}/runs/plain_2x_s0_again.json are both seed 0"),
                          (f"plain={tmp_path}/machine:plain_2x", "plain_2x_s1.json ran on another machine"),
                          (f"plain={tmp_path}/code:plain_2x", "_s1.json ran on another training code"),
                          (f"plain={tmp_path}/bare:plain_2x", "does not say which machine and training code"),
                          (f"plain={short}:plain_ag", "no finished record of row plain_ag"),
                          ("plain", "expected ROW=SETTING:ROW"),
                          (f"nope={short}:plain", "unknown benchmark row 'nope'"),
                          (f"plain={tmp_path / 'none'}:plain_2x", "has no runs/ of records")):
        assert main([*args, "--only", "borrow", "--borrow", spec]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in long.iterdir() if p.is_file()} == kept
    empty = ["bench", "--config", str(configs["long"]), "--out", str(tmp_path / "empty"), "--only", "borrow"]
    assert main([*empty, "--borrow", f"plain={short}:plain_2x"]) == 2  # nothing here to check it against
    assert "has no record started from the plain pre-training of seed 0" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()
    assert main([*args, "--only", "borrow"]) == 2
    assert "--only borrow needs --borrow" in capsys.readouterr().err
    assert main([*args, "--only", "report", *specs[:2]]) == 2  # not silently ignored
    assert "--borrow is read only by --only borrow" in capsys.readouterr().err
    assert main([*args, "--only", "borrow", *specs[:2], *specs[:2]]) == 2
    assert "--borrow: row plain is given twice" in capsys.readouterr().err
    from agq.bench import borrow

    def check_then_change(*check_args) -> None:  # the source rewritten between its check and its hash
        checked(*check_args)
        path = short / "runs" / "plain_2x_s2.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"wall_s": 1.0}))

    checked = borrow._check
    monkeypatch.setattr(borrow, "_check", check_then_change)
    assert main([*args, "--only", "borrow", "--borrow", f"plain={short}:plain_2x"]) == 2
    assert "plain_2x_s2.json changed while it was checked; borrow again" in capsys.readouterr().err
    monkeypatch.setattr(borrow, "_check", checked)
    (short / "runs" / "plain_2x_s2.json").write_bytes(kept_source)
    for only in ("accuracy", "status"):  # before anything runs
        assert main([*args, "--only", only, "--rows", "residual,plain"]) == 2
        assert "row plain is borrowed" in capsys.readouterr().err
    assert not (tmp_path / "long_runs").exists()

    elsewhere = tmp_path / "x" / "y"  # where "../short" is no folder: the source is found from the results
    elsewhere.mkdir(parents=True)  # folder, not the working directory
    monkeypatch.chdir(elsewhere)
    own = long / "runs" / "plain_s0.json"
    shutil.copy(short / "runs" / "plain_s0.json", own)
    source = short / "runs" / "plain_2x_s1.json"
    text = source.read_text()

    def refused(message: str) -> None:
        assert main([*args, "--only", "report"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err

    refused("has records of row plain, which")  # the folder's own plain beside the borrowed one
    own.unlink()
    source.write_text(text.replace("92.5", "93.5"))
    refused(f"borrowed record {source} changed since it was borrowed (sha256 differs); borrow row plain")
    source.unlink()
    refused(f"borrowed record {source} is not found")
    (long / "borrowed.json").write_text('{"plain": {"records": []}}')
    refused("borrowed.json: expected {ROW: {setting, row, records}}")
    assert {p.name: p.read_bytes() for p in long.iterdir() if p.is_file() and p.name != "borrowed.json"} == {
        k: v for k, v in kept.items() if k != "borrowed.json"}
    (long / "borrowed.json").write_bytes(kept["borrowed.json"])
    source.write_text(text)
    assert main([*args, "--only", "report"]) == 0

    half = tmp_path / "half"  # long's own setting run elsewhere: its plain_kd is long's plain_kd
    _records_of(half, configs["long"], {"plain_kd": [93.0, 93.0, 94.0]})
    assert main([*args, "--only", "borrow", "--borrow", f"plain_kd={half}:plain_kd"]) == 0
    assert sorted(json.loads((long / "borrowed.json").read_text())) == ["plain", "plain_kd"]
    stale = half / "runs" / "plain_kd_s0.json"
    stale.write_text(stale.read_text().replace("93.0", "93.5"))
    before = (long / "borrowed.json").read_bytes()
    copy = shutil.copytree(short, tmp_path / "copy")  # the same records elsewhere: borrowed.json would change
    assert main([*args, "--only", "borrow", "--borrow", f"plain={copy}:plain_2x"]) == 2  # kept row is stale
    assert f"borrowed record {stale} changed since it was borrowed" in capsys.readouterr().err
    assert (long / "borrowed.json").read_bytes() == before
    assert main([*args, "--only", "borrow", "--borrow", f"plain_kd={half}:plain_kd"]) == 0  # borrowed again
    assert json.loads((long / "accuracy.json").read_text())["rows"]["plain_kd"]["test_F_top1"]["values"] == [
        93.5, 93.0, 94.0]
