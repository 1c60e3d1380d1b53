"""Runs build steps one after another: name and time of each on the console, FINN's chatter in build.log,
a one-line AgqError instead of a traceback, and reuse of finished steps when nothing changed.

Each step's cache key chains the previous key with the step's name, starting from a key over the
input model, the configuration and the build code (see :func:`hw.build.base_key`). The model after
every step is kept in ``intermediate_models/``; a re-run loads the last model of the longest prefix of
steps whose keys match and runs only the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from agq.hw.finn_env import FINN_TMP
from agq.hw.prune import referenced_paths
from qonnx.core.modelwrapper import ModelWrapper
from tqdm import tqdm

from agq.errors import AgqError
from agq.io import atomic_write_bytes, write_json
from agq.progress import bar as progress_bar

MANIFEST = "steps.json"
Step = Callable[[ModelWrapper, object], ModelWrapper]


@contextlib.contextmanager
def captured_output(log: IO[str]) -> Iterator[None]:
    """Send prints, warnings and FINN's logger to ``log`` while a step runs."""
    finn_log = logging.getLogger("finn_logger")
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    old_level, old_propagate = finn_log.level, finn_log.propagate
    finn_log.addHandler(handler)
    finn_log.setLevel(logging.INFO)
    finn_log.propagate = False
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        finn_log.removeHandler(handler)
        finn_log.setLevel(old_level)
        finn_log.propagate = old_propagate


def _chain(key: str, name: str) -> str:
    return hashlib.sha256(f"{key}/{name}".encode()).hexdigest()


class StepRunner:
    """Runs ``steps`` on a model inside ``build_dir``, reusing what an identical earlier run finished."""

    def __init__(self, build_dir: Path, cfg: object, base_key: str, log: IO[str], progress: bool = True):
        self.build_dir = build_dir
        self.cfg = cfg
        self.base_key = base_key
        self.log = log
        self.progress = progress
        self.models = build_dir / "intermediate_models"
        self.manifest_path = build_dir / MANIFEST
        self.records: list[dict] = []

    def _manifest(self) -> dict[str, dict]:
        try:
            return {r["name"]: r for r in json.loads(self.manifest_path.read_text())["steps"]}
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return {}

    def _save_manifest(self, done: list[dict]) -> None:
        write_json(self.manifest_path, {"steps": done})

    def _reusable_prefix(self, names: list[str], required: list[Path], old: dict[str, dict]
                         ) -> tuple[int, ModelWrapper | None]:
        """How many leading steps of the ``old`` manifest can be skipped, and the model after the last."""
        if not all(p.exists() for p in required):
            return 0, None
        key, n = self.base_key, 0
        for name in names:
            key = _chain(key, name)
            record = old.get(name)
            if record is None or record.get("key") != key or not (self.models / record["file"]).is_file():
                break
            n += 1
        while n:
            file = self.models / old[names[n - 1]]["file"]
            if all(p.exists() for p in referenced_paths([file], (self.build_dir / FINN_TMP).resolve())):
                return n, ModelWrapper(str(file))
            n -= 1
        return 0, None

    def run(self, steps: list[Step], model: ModelWrapper, required: list[Path] = ()) -> ModelWrapper:
        """Run (or reuse) every step; ``required`` are side outputs a reused build must still have."""
        self.models.mkdir(parents=True, exist_ok=True)
        names = [s.__name__ for s in steps]
        old = self._manifest()
        skip, cached = self._reusable_prefix(names, list(required), old)
        console = sys.stderr
        key = self.base_key
        done = self.records = []
        # The bar draws on a terminal only (agq.progress), so a piped `make build` log holds just the step
        # lines, not a redrawn bar between each; the context manager clears it before an error.
        with progress_bar(total=len(steps), desc="agq build", unit="step", stream=console,
                          enabled=self.progress, log_line=False, leave=False) as bar:
            for i, (step, name) in enumerate(zip(steps, names, strict=True)):
                key = _chain(key, name)
                if i < skip:
                    record = {**old[name], "reused": True}
                else:
                    if i == skip and cached is not None:
                        model = cached
                    record = self._run_one(step, name, i, model, key)
                    model = record.pop("model")
                done.append(record)
                self._save_manifest(done)
                status = "reused" if record["reused"] else f"{record['seconds']:.1f} s"
                tqdm.write(f"[{i + 1:2d}/{len(steps)}] {name:<36} {status}", file=console)
                bar.update()
        if skip == len(steps):
            model = cached
        return model

    def _run_one(self, step: Step, name: str, index: int, model: ModelWrapper, key: str) -> dict:
        print(f"=== [{index + 1}] {name} ===", file=self.log, flush=True)
        start = time.perf_counter()
        try:
            with captured_output(self.log):
                model = step(model, self.cfg)
        except AgqError:
            traceback.print_exc(file=self.log)
            raise
        except Exception as exc:  # FINN's own errors: one line for the user, the traceback in build.log
            traceback.print_exc(file=self.log)
            lines = str(exc).strip().splitlines()
            detail = lines[0] if lines else ""
            raise AgqError(
                f"{name} failed: {type(exc).__name__}: {detail} (traceback in {self.log.name})"
            ) from None
        seconds = time.perf_counter() - start
        print(f"--- {name} done in {seconds:.2f} s", file=self.log, flush=True)
        file = f"{index + 1:02d}_{name}.onnx"
        atomic_write_bytes(self.models / file, model.model.SerializeToString())
        return {"name": name, "key": key, "file": file, "seconds": round(seconds, 3), "reused": False,
                "model": model}
