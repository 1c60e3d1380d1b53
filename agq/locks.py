"""One process per output folder: a run folder (``agq train``) or a build folder (``agq build``).

``fcntl.flock`` on ``.agq.lock`` inside the folder. The kernel drops the lock when its process dies,
however it dies, so the file left behind by a killed process never blocks anyone; the file only tells a
second process who holds the lock (pid and command line), and the second process stops at once with one
line naming that holder instead of interleaving its files with the first one's. A holder that ends
normally deletes the file while it still holds the lock (and the folders it made, as far as they are
empty); a process that locked a file deleted meanwhile sees that the path no longer leads to its file,
and tries again on the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from agq.errors import AgqError
from agq.io import output_errors, prepare_dir

LOCK = ".agq.lock"


class FolderBusy(AgqError):
    """Another live process holds the folder's lock."""


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} ({info['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def _lock(path: Path, folder: Path, what: str) -> int:
    """An fd of ``path`` holding its lock (one line naming the holder if another process has it)."""
    while True:
        with output_errors(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderBusy(f"{folder} is in use by {holder}: wait for it to finish or choose another "
                             f"{what}") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder deleted the file as we opened it: lock the new one


def _missing(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first: what locking it creates."""
    missing = []
    while not folder.is_dir() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def holder(folder: Path) -> str | None:
    """Who holds ``folder``'s lock now (None: nobody alive), for reports that must not take it.

    A shared lock is tried and dropped at once; a process taking the lock in that instant stops with one
    line (:class:`FolderBusy`), so this probes only locks taken when a command starts (a benchmark's),
    never those its workers take mid-run (a run folder's)."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: no holder (a holder that ends deletes it)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # also drops the shared lock if it was taken
    return None


@contextlib.contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[Path]:
    """Hold ``folder``'s lock (creating the folder) for the ``with`` block; :class:`FolderBusy` naming
    the holder if a live process has it. ``what`` says which option names the folder (``--out``)."""
    made = _missing(Path(folder))
    folder = prepare_dir(folder)
    path = folder / LOCK
    fd = _lock(path, folder, what)
    try:
        with output_errors(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)}).encode(), 0)
        yield folder
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock
        for made_here in made:  # innermost first; stops at the first that is not empty (the usual case)
            try:
                made_here.rmdir()
            except OSError:
                break
