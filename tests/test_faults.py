"""Faults and hostile input: one line naming the file or key, a non-zero exit, nothing older lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agq import io
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
