"""Faults and hostile input: one line naming the file or key, a non-zero exit, nothing older lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import pytest

from agq import io
from agq.cli import main
from agq.errors import AgqError

DEAD_PID = 2**22 + 12345  # above the kernel's pid_max: no process has it


def _dead_writer_temp(folder: Path, name: str) -> Path:
    temp = folder / f".{name}.{DEAD_PID}.abc123.tmp"
    temp.write_bytes(b"half")
    return temp


def test_commit_rolls_forward_after_a_crash_between_the_renames(tmp_path, monkeypatch):
    io.commit_files(tmp_path, {"a.bin": b"old a", "b.json": b"old b"})
    real_replace = os.replace
    calls = []

    def crash_after_first(src, dst):
        if calls:
            raise KeyboardInterrupt  # stands for kill -9 between the two renames
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        io.commit_files(tmp_path, {"a.bin": b"new a", "b.json": b"new b"})
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert (tmp_path / io.JOURNAL).is_file()
    io.finish_commit(tmp_path)  # what the next reader or writer does first
    assert (tmp_path / "a.bin").read_bytes() == b"new a"
    assert (tmp_path / "b.json").read_bytes() == b"new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]


def test_commit_interrupted_before_the_journal_keeps_the_old_set_and_cleans_temps(tmp_path, monkeypatch):
    io.commit_files(tmp_path, {"a.bin": b"old a", "b.json": b"old b"})
    stale = _dead_writer_temp(tmp_path, "a.bin")
    real_write = io._write_temp

    def fail_on_second(path, data):
        if path.name == "b.json":
            raise OSError(28, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(io, "_write_temp", fail_on_second)
    with pytest.raises(OSError):
        io.commit_files(tmp_path, {"a.bin": b"new a", "b.json": b"new b"})
    assert (tmp_path / "a.bin").read_bytes() == b"old a"
    assert (tmp_path / "b.json").read_bytes() == b"old b"
    assert not stale.exists()  # the dead writer's temp went at the start of the next commit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]


def test_temps_of_a_live_writer_are_kept(tmp_path):
    mine = tmp_path / f".x.{os.getpid()}.abc.tmp"
    mine.write_bytes(b"in progress")
    assert io.clean_stale_temps(tmp_path) == []
    assert mine.exists()


def test_output_path_that_is_a_regular_file_is_one_line(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("precious")
    with pytest.raises(io.OutputError) as caught:
        io.write_json(blocker / "x.json", {})
    assert str(caught.value) == f"cannot write {blocker}/x.json: {blocker} is a file, not a folder"
    assert blocker.read_text() == "precious"


def test_file_size_limit_is_one_line_and_leaves_the_old_file(tmp_path):
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "from agq import io\n"
            "try:\n"
            f"    io.atomic_write_bytes(__import__('pathlib').Path({str(target)!r}), bytes(5000))\n"
            "except io.OutputError as exc:\n"
            "    print(exc); sys.exit(2)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == f"cannot write {target}: File too large (file-size limit, ulimit -f)"
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]


def test_damaged_json_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text('{"status": ')
    with pytest.raises(AgqError, match=rf"{bad} is not valid JSON .*run `agq build` again"):
        io.read_json(bad, "agq build")
    io.write_json(bad, {"status": "complete"})
    assert io.read_json(bad, "agq build") == {"status": "complete"}


# --- the stages -------------------------------------------------------------------------------------

CONFIG = "configs/digits_tiny.yaml"
QUICK = ["--set", "train.pretrain_epochs=1", "--set", "train.epochs=0", "--set", "data.limit_train=256"]


def one_line(capsys, command: str) -> str:
    """The single stderr line of a failed ``agq COMMAND``."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"agq {command}: error: "), lines
    return lines[0].removeprefix(f"agq {command}: error: ")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_args(runs: Path, *extra: str) -> list[str]:
    return ["train", "--config", CONFIG, "--no-progress", "--set", f"train.output_dir={runs}", *QUICK, *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch run: runs/digits_tiny/{checkpoint.pt,last.pt,metrics.*}."""
    runs = tmp_path_factory.mktemp("finished") / "runs"
    assert main(train_args(runs)) == 0
    return runs


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    """model.onnx + model.json of the finished run."""
    from agq.export.qonnx import export_checkpoint

    checkpoint = finished_run / "digits_tiny" / "checkpoint.pt"
    return export_checkpoint(checkpoint, tmp_path_factory.mktemp("export"), n_images=16)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_failed_fresh_run_keeps_the_finished_run(capsys, finished_run, tmp_path, monkeypatch):
    import torch.nn.functional as nnf
    from agq.training import loop

    class NanLoss:  # a loss that is NaN from the first step, as a NaN lambda gave before it was refused
        @staticmethod
        def cross_entropy(*args, **kwargs):
            return nnf.cross_entropy(*args, **kwargs) * float("nan")

    monkeypatch.setattr(loop, "nnf", NanLoss)
    runs = copy_tree(finished_run, tmp_path / "runs")
    before = snapshot(runs)
    capsys.readouterr()
    assert main(train_args(runs)) == 2
    assert "training diverged in pretrain epoch 1" in one_line(capsys, "train")
    assert snapshot(runs) == before


def test_a_fresh_run_replaces_the_old_final_only_after_its_first_epoch(finished_run, tmp_path, monkeypatch):
    from agq.training import checkpoint, loop

    runs = copy_tree(finished_run, tmp_path / "runs")
    final = runs / "digits_tiny" / "checkpoint.pt"
    old_final = final.read_bytes()
    seen = []
    real_save = loop.save_checkpoint

    def save(path, payload):
        seen.append((Path(path).name, final.is_file() and final.read_bytes() == old_final))
        real_save(path, payload)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    assert main(train_args(runs, "--set", "train.seed=1")) == 0
    assert seen == [(checkpoint.LAST, True), (checkpoint.CHECKPOINT, False)]  # old final kept until then


@pytest.mark.parametrize("override", ["name=..", "train.output_dir=runs/../..", "name=."])
def test_run_folder_outside_the_run_root_is_refused(capsys, tmp_path, monkeypatch, override):
    monkeypatch.chdir(tmp_path)
    key = override.split("=")[0]
    assert main(["train", "--config", str(Path(__file__).parents[1] / CONFIG), "--set", override]) == 2
    assert one_line(capsys, "train").startswith(f"config {key}=")
    assert list(tmp_path.iterdir()) == []


def test_altered_checkpoint_is_refused_by_every_reader(capsys, finished_run, tmp_path):
    from agq.training.checkpoint import load_checkpoint

    runs = copy_tree(finished_run, tmp_path / "runs")
    for name in ("checkpoint.pt", "last.pt"):
        path = runs / "digits_tiny" / name
        weights = load_checkpoint(path)["model"]["stem.weight"]
        data = bytearray(path.read_bytes())
        at = data.find(weights.numpy().tobytes())
        assert at > 0  # torch stores tensors uncompressed: the weight bytes are in the file as they are
        data[at + 5] ^= 0x01
        path.write_bytes(bytes(data))
    capsys.readouterr()
    final, last = runs / "digits_tiny" / "checkpoint.pt", runs / "digits_tiny" / "last.pt"
    expected = "is damaged: its content does not match its recorded sha256"
    assert main(["export", "--checkpoint", str(final), "--out", str(tmp_path / "out")]) == 2
    assert one_line(capsys, "export") == f"checkpoint {final} {expected} (altered or corrupted on disk); " \
                                         "train again or restore a copy"
    assert main([*train_args(runs), "--resume"]) == 2
    assert one_line(capsys, "train").startswith(f"checkpoint {last} {expected}")
    assert not (tmp_path / "out").exists()


def test_stale_card_is_named_by_the_build(capsys, exported, tmp_path):
    folder = copy_tree(exported.parent, tmp_path / "export")
    model = folder / "model.onnx"
    proto = onnx.load(str(model))
    proto.doc_string = "another export"
    onnx.save(proto, str(model))  # replaced, card not
    capsys.readouterr()
    assert main(["build", "--model", str(model), "--out", str(tmp_path / "build")]) == 2
    assert one_line(capsys, "build") == (
        f"{model} does not match {folder / 'model.json'} (its sha256 differs from the one recorded there: "
        "the model was replaced or the card is stale); run `agq export` again")
    assert not (tmp_path / "build").exists()


def test_export_killed_between_its_file_writes_leaves_the_old_pair(capsys, finished_run, exported, tmp_path):
    folder = copy_tree(exported.parent, tmp_path / "export")
    old = snapshot(folder)
    checkpoint = finished_run / "digits_tiny" / "checkpoint.pt"
    code = ("import os, sys\n"
            "from agq import io\n"
            "real = io._write_temp\n"
            "def write_then_die(path, data):\n"
            "    tmp = real(path, data)\n"
            "    if path.name == 'model.json':\n"
            "        os._exit(137)  # kill -9 after both temps, before the commit record\n"
            "    return tmp\n"
            "io._write_temp = write_then_die\n"
            "from agq.cli import main\n"
            f"sys.exit(main(['export', '--checkpoint', {str(checkpoint)!r}, '--out', {str(folder)!r}, "
            "'--images', '4', '--no-progress']))\n")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 137, done.stderr
    temps = sorted(p.name for p in folder.glob(".*.tmp"))
    assert [t.split(".")[1] for t in temps] == ["model", "model"]  # both complete temps left behind
    assert {p: b for p, b in snapshot(folder).items() if not p.endswith(".tmp")} == old  # the old pair
    from agq.export.model_card import read_card

    assert read_card(folder / "model.onnx").model["sha256"] == io.file_sha256(folder / "model.onnx")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(folder), "--images", "4"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx"]  # temps cleaned


def test_second_build_on_a_locked_folder_names_the_holder(capsys, exported, tmp_path):
    from agq.locks import folder_lock

    out = tmp_path / "build"
    out.mkdir()
    (out / "report.json").write_text("the first build's")
    capsys.readouterr()
    with folder_lock(out, "--out"):
        assert main(["build", "--model", str(exported), "--out", str(out)]) == 2
        line = one_line(capsys, "build")
    assert line.startswith(f"{out} is in use by pid {os.getpid()} (")
    assert line.endswith("): wait for it to finish or choose another --out")
    assert snapshot(out) == {"report.json": b"the first build's"}


def test_lock_file_of_a_dead_process_does_not_block(tmp_path):
    from agq.locks import LOCK, folder_lock

    (tmp_path / LOCK).write_text(json.dumps({"pid": DEAD_PID, "command": "agq build (killed)"}))
    with folder_lock(tmp_path, "--out") as folder:
        assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()


def test_second_train_on_a_locked_run_folder_names_the_holder(capsys, tmp_path):
    from agq.locks import folder_lock

    runs = tmp_path / "runs"
    with folder_lock(runs / "digits_tiny", "config name"):
        assert main(train_args(runs)) == 2
        assert one_line(capsys, "train").startswith(f"{runs / 'digits_tiny'} is in use by pid {os.getpid()}")
    assert not runs.joinpath("digits_tiny").exists()  # the holder made it and left it empty


def _fake_build(folder: Path, status: str = "complete") -> Path:
    """A build folder as `agq build` commits it, with stand-in partition files (no FINN run)."""
    from agq.hw.report import REPORT, BuildReport

    folder.mkdir()
    files = {"partition_hdl.onnx": b"partition", "parent.onnx": b"parent"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    report = BuildReport(
        status=status, model=str(folder / "model.onnx"), model_sha256="0" * 64, agq_export=False, board={},
        config={}, finn_version="x", vivado={}, error="step_x failed: boom" if status == "failed" else None,
        paths={"partition_hdl": str(folder / "partition_hdl.onnx"), "parent": str(folder / "parent.onnx")},
        outputs={name: io.bytes_sha256(data) for name, data in files.items()},
        partition={"non_rtl": []}, certificate={"passed": True}, output_scale=None,
        estimates={"clock_mhz": 100.0, "max_cycles": 10, "bottleneck": "x"})
    io.write_json(folder / REPORT, report.to_dict())
    return folder


def test_rtlsim_names_a_partition_changed_after_the_report(capsys, tmp_path):
    from agq.hw.rtlsim.build_info import read_build

    build = _fake_build(tmp_path / "b")
    assert read_build(build).partition == build / "partition_hdl.onnx"
    (build / "partition_hdl.onnx").write_bytes(b"another build's partition")
    capsys.readouterr()
    assert main(["rtlsim", "--build", str(build), "--no-progress"]) == 2
    assert one_line(capsys, "rtlsim") == (
        f"{build / 'partition_hdl.onnx'} changed after {build / 'report.json'} was written (its sha256 "
        "differs from the recorded one: an interrupted or concurrent build, or an edit): run "
        "`agq build` again")


def test_hardware_bench_checks_the_recorded_hashes(tmp_path):
    from agq.bench.hardware import collect
    from agq.hw.report import REPORT

    (tmp_path / "m").mkdir()
    build = _fake_build(tmp_path / "m" / "board")
    report = io.read_json(build / REPORT, "test")
    report["estimates"] |= {"total": {"LUT": 1, "BRAM_18K": 2, "DSP": 3}, "fps": 4.0, "latency_ms": 0.1,
                            "board_share": {}}
    io.write_json(build / REPORT, report)
    assert collect(tmp_path, "m", "board", build_missing=False)["estimates"]["DSP"] == 3
    (build / "parent.onnx").write_bytes(b"another build's graph")
    with pytest.raises(AgqError, match=f"{build / 'parent.onnx'} changed after {build / REPORT}"):
        collect(tmp_path, "m", "board", build_missing=False)


def test_rtlsim_names_a_failed_build(capsys, tmp_path):
    build = _fake_build(tmp_path / "b", status="failed")
    capsys.readouterr()
    assert main(["rtlsim", "--build", str(build), "--no-progress"]) == 2
    assert one_line(capsys, "rtlsim") == (f"{build / 'report.json'} records a failed build (step_x failed: "
                                          "boom): run `agq build` again")


CASES = """
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full file then fails with EFBIG instead of killing us
from agq.cli import main
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
for limit, argv in json.loads(sys.argv[1]):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit or hard, hard))
    code = main(argv)
    print(f"exit {code}", file=sys.stderr, flush=True)
"""


def _read_only(folder: Path, command: list[str]) -> tuple[list[str], str]:
    """``command`` made to see ``folder`` read-only, and the error a write there gets. Permission bits do
    not stop root: as root, the command runs in its own mount namespace with the folder bind-mounted
    read-only."""
    if os.geteuid() != 0:
        for path in [*folder.rglob("*"), folder]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return command, "Permission denied"
    wrap = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder)]
    probe = subprocess.run([*wrap, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root without a way to make a folder read-only: {probe.stderr.strip()}")
    return [*wrap, *command], "Read-only file system"


def test_unwritable_outputs_are_one_line_and_keep_older_results(finished_run, exported):
    base = Path(tempfile.mkdtemp())
    try:
        ro, rw = base / "ro", base / "rw"
        for root in (ro, rw):
            copy_tree(finished_run / "digits_tiny", root / "runs" / "digits_tiny")
            copy_tree(exported.parent, root / "export")
            (root / "build").mkdir()
        (base / "file").write_text("in the way")
        last = rw / "runs" / "digits_tiny" / "last.pt"
        assert last.stat().st_size > 8192 and exported.stat().st_size > 1024
        before = snapshot(base)
        command, read_only = _read_only(ro, [sys.executable, "-W", "ignore", "-c", CASES])

        def train(runs: Path) -> list[str]:
            return train_args(runs)

        def export(out: Path) -> list[str]:
            return ["export", "--checkpoint", str(base / "ro" / "runs" / "digits_tiny" / "checkpoint.pt"),
                    "--out", str(out), "--images", "4", "--no-progress"]

        def build(out: Path) -> list[str]:
            return ["build", "--model", str(ro / "export" / "model.onnx"), "--out", str(out)]

        fsize = "File too large (file-size limit, ulimit -f)"
        not_folder = f"{base / 'file'} is a file, not a folder"
        cases = [
            (0, train(ro / "runs"), f"cannot write {ro / 'runs' / 'digits_tiny'}: {read_only}"),
            (0, export(ro / "export"), f"cannot write {ro / 'export'}: {read_only}"),
            (0, build(ro / "build"), f"cannot write {ro / 'build'}: {read_only}"),
            (8192, train(rw / "runs"), f"cannot write {last}: {fsize}"),  # after its epoch
            (1024, export(rw / "export"), f"cannot write {rw / 'export' / 'model.onnx'}: {fsize}"),
            (16, build(rw / "build"), f"cannot write {rw / 'build' / 'input.npy'}: {fsize}"),
            (0, train(base / "file"), f"cannot write {base / 'file' / 'digits_tiny'}: {not_folder}"),
            (0, export(base / "file"), f"cannot write {base / 'file'}: {not_folder}"),
            (0, build(base / "file"), f"cannot write {base / 'file'}: {not_folder}"),
        ]
        done = subprocess.run([*command, json.dumps([case[:2] for case in cases])], capture_output=True,
                              text=True, timeout=600)
        lines = done.stderr.strip().splitlines()
        expected = []
        for _, argv, message in cases:
            expected += [f"agq {argv[0]}: error: {message}", "exit 2"]
        assert lines == expected
        assert snapshot(base) == before  # nothing older lost, no temporary or lock file left
    finally:
        for folder in [base, *base.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(base)


def test_a_reader_that_goes_away_stops_a_command_quietly(tmp_path):
    """``agq ... | head`` closes the pipe before agq writes: one exit code, no traceback."""
    cmd = [sys.executable, "-m", "agq.cli", "bench", "--only", "status", "--config",
           "configs/digits_tiny.yaml", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # no reader left: agq's write meets a broken pipe
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "", err
    assert not (tmp_path / "out").exists()  # status reads only, even when its output is lost


def test_a_broken_pipe_of_the_commands_own_is_not_taken_for_a_reader_gone(monkeypatch, tmp_path):
    """Only stdout's reader going away ends a command quietly; any other broken pipe is a failure."""
    from agq.bench import status

    def child_died(*_args):
        raise BrokenPipeError(32, "Broken pipe")  # as writing to a dead child's stdin would

    monkeypatch.setattr(status, "render", child_died)
    with pytest.raises(BrokenPipeError):
        main(["bench", "--only", "status", "--config", "configs/digits_tiny.yaml", "--out", str(tmp_path)])
