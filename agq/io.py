"""Files every stage writes and reads: atomic writes, JSON, sha256, and stage outputs committed together.

torch-free on purpose: hw/ and bench/ write their files through this module without importing training.

* **One file** (:func:`atomic_write_bytes`): the bytes go to a temporary file in the same folder
  (``.<name>.<pid>.<random>.tmp``), are fsync'ed, and ``os.replace`` puts them in place; a reader sees
  the old file or the whole new one.
* **Several files of one stage** (:func:`commit_files`, e.g. model.onnx + model.json): a write-ahead
  journal. Every new file is first written to its temporary file and fsync'ed; then the journal
  ``.commit.json`` (each file's name, temporary name and sha256) is written atomically; only then are
  the temporary files renamed over the old ones, and the journal is deleted last. A crash before the
  journal exists leaves the old set (plus temporary files); a crash after it leaves a journal whose
  files are all complete on disk, and :func:`finish_commit` (run by the next writer *and* by every
  reader of the folder) rolls it forward to the new set. So a reader never sees a mix.
* **Temporary files of a killed writer** carry its pid; :func:`clean_stale_temps` (run by
  :func:`prepare_dir`) deletes those whose process no longer exists.
* **Write errors** (read-only folder, a regular file where a folder should be, a full disk or a file-size
  limit) become one :class:`OutputError` naming the path, after the temporary file is removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agq.errors import AgqError

JOURNAL = ".commit.json"
_TEMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


class OutputError(AgqError):
    """An output could not be written (permissions, no space, file-size limit, path is not a folder)."""


@contextmanager
def output_errors(path: Path) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into one :class:`OutputError` line naming it."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno == errno.EFBIG:
            reason += " (file-size limit, ulimit -f)"
        culprit = Path(exc.filename) if exc.filename else None
        blocker = next((p for p in [*reversed(Path(path).parents), Path(path)]
                        if p.exists() and not p.is_dir()), None)
        if exc.errno in (errno.EEXIST, errno.ENOTDIR) and blocker is not None:
            reason = f"{blocker} is a file, not a folder"
        elif culprit is not None and culprit != Path(path) and Path(path).is_relative_to(culprit):
            reason = f"{culprit}: {reason}"  # a folder above it
        raise OutputError(f"cannot write {path}: {reason}") from None


def prepare_dir(folder: Path) -> Path:
    """Create ``folder`` (one line naming it when that is impossible), finish an interrupted commit in it
    and delete temporary files that killed writers left behind."""
    folder = Path(folder)
    with output_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        _probe(folder)
    finish_commit(folder)
    clean_stale_temps(folder)
    return folder


def check_writable(folder: Path) -> None:
    """One :class:`OutputError` now, before any work, if ``folder`` cannot be created or written to;
    creates nothing (a stage that then fails leaves no empty folder behind)."""
    folder = Path(folder)
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    with output_errors(folder):
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        _probe(existing)


def _probe(folder: Path) -> None:
    """Create and drop a nameless file in ``folder``: the OSError a real write would get (access() is
    no use for root, nor does it tell a read-only file system from a missing permission)."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(folder)) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Delete ``folder``'s temporary files whose writing process is gone; returns what was deleted."""
    stale = []
    for path in Path(folder).glob(".*.tmp"):
        match = _TEMP.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            stale.append(path)
    return stale


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` in a fsync'ed temporary file beside ``path`` (the mode a plain open() would give)."""
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with output_errors(path), os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one, never half."""
    path = Path(path)
    tmp = _write_temp(path, data)
    try:
        with output_errors(path):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_bytes(data: Any, indent: int = 2) -> bytes:
    """The one JSON layout agq writes: indented, newline at the end."""
    return (json.dumps(data, indent=indent) + "\n").encode()


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    atomic_write_bytes(path, json_bytes(data, indent))


def not_a_file(path: Path) -> str:
    """Why a reader cannot open ``path`` as a file: a folder given where a file belongs was reported as
    "not found", which sends the user looking for something that is there."""
    return "is a folder, not a file" if path.is_dir() else "not found"


def read_json(path: Path, made_by: str) -> Any:
    """A JSON file another command wrote; missing or broken is one line naming it and ``made_by``."""
    path = Path(path)
    if not path.is_file():
        raise AgqError(f"{path} {not_a_file(path)}: run `{made_by}` first")
    return _loads(path, f"run `{made_by}` again")


def read_earlier_json(path: Path) -> Any:
    """A result this command keeps or checks before writing over it (scores it merges, the inputs of a
    reading): broken, it is one line asking to restore it, since running the command again would only
    meet the same file."""
    return _loads(Path(path), "restore it (git checkout) or move it away")


def _loads(path: Path, remedy: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"{exc.msg}, line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not text"
        raise AgqError(f"{path} is not valid JSON ({detail}); {remedy}") from None


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def commit_files(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (name -> bytes) into ``folder`` together: afterwards, and after a crash at any
    point followed by :func:`finish_commit`, the folder holds all old or all new files (module doc)."""
    folder = prepare_dir(folder)
    temps: dict[str, Path] = {}
    try:
        for name, data in files.items():
            temps[name] = _write_temp(folder / name, data)
        journal = {name: {"temp": temps[name].name, "sha256": bytes_sha256(files[name])} for name in files}
        write_json(folder / JOURNAL, {"files": journal})
    except BaseException:
        if not (folder / JOURNAL).exists():  # interrupted before the commit record: back to the old set
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
        raise
    finish_commit(folder)


def finish_commit(folder: Path) -> None:
    """Roll an interrupted :func:`commit_files` in ``folder`` forward (nothing to do without a journal).
    Readers call it too, so a crash between the renames is never read as a mix of old and new files."""
    folder = Path(folder)
    journal_path = folder / JOURNAL
    if not journal_path.is_file():
        return
    try:
        entries = json.loads(journal_path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise AgqError(f"{journal_path} is damaged: delete it and write the folder again") from None
    with output_errors(journal_path):
        for name, entry in entries.items():
            tmp, final = folder / entry["temp"], folder / name
            if tmp.is_file() and file_sha256(tmp) == entry["sha256"]:
                os.replace(tmp, final)
            elif not (final.is_file() and file_sha256(final) == entry["sha256"]):
                raise AgqError(f"{final}: an interrupted write left neither the new file nor its temporary "
                               f"copy ({journal_path}); write the folder again")
        _fsync_dir(folder)
        journal_path.unlink()
        _fsync_dir(folder)
