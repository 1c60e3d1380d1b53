"""Run a compiled simulator on many images: pack, split into parallel chunks, collect words and cycles.

Input words are packed and output words unpacked with FINN's own functions
(``finn.util.data_packing``), exactly as FINN's per-node rtlsim does, so that the stream layout is
FINN's and not a re-implementation. One simulator process streams a whole chunk of images back to
back, which is what makes the steady-state cycle count (and the simulation speed) meaningful; ``jobs``
chunks run as separate processes, each with its own reset. The processes are started by
:meth:`ChunkedRun.start` and collected by :meth:`ChunkedRun.wait`, so the caller can compute the
Python references meanwhile.
"""

from __future__ import annotations

import itertools
import resource
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from agq.hw.rtlsim.stitch import StitchedDesign
from agq.hw.rtlsim.verilator import Simulator
from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy
from qonnx.core.datatype import DataType

from agq.errors import AgqError


@dataclass
class ChunkResult:
    """One simulator process: its images and every output word with the cycle it was accepted in."""

    first_image: int
    images: int
    words: list[int] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    total_cycles: int = 0


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def words_per_image(shape: tuple[int, ...]) -> int:
    """Stream words of one image: FINN's folded shape without its last (packed) dimension."""
    return int(np.prod(shape[:-1]))


def pack_inputs(design: StitchedDesign, inputs: np.ndarray) -> list[int]:
    """All images' input words, packed by FINN (``inputs`` holds the partition input of each image)."""
    port = design.input
    folded = inputs.reshape((len(inputs), *port.folded_shape[1:])).astype(np.float32)
    return npy_to_rtlsim_input(folded, DataType[port.datatype], port.packed_bits)


def unpack_outputs(design: StitchedDesign, words: list[int], images: int) -> np.ndarray:
    """Integer outputs (images, values per image) from output words, unpacked by FINN."""
    port = design.output
    shape = (images, *port.folded_shape[1:])
    dt = DataType[port.datatype]
    out = rtlsim_output_to_npy(words, None, dt, shape, port.packed_bits, port.element_bits)
    return np.asarray(out).reshape(images, -1).astype(np.int64)


class ChunkedRun:
    """``jobs`` simulator processes over contiguous chunks of the images, run in ``memory_dir``."""

    def __init__(
        self, simulator: Simulator, design: StitchedDesign, inputs: np.ndarray, *, stall_prob: float,
        seed: int, jobs: int, watchdog: int, max_cycles_per_image: int,
        on_image: Callable[[], None] | None = None,
    ) -> None:
        self.simulator, self.design = simulator, design
        self.stall_prob, self.seed = stall_prob, seed
        self.watchdog, self.max_cycles_per_image = watchdog, max_cycles_per_image
        self.on_image = on_image
        self.words = pack_inputs(design, inputs)
        self.in_words = words_per_image(design.input.folded_shape)
        self.out_words = words_per_image(design.output.folded_shape)
        bounds = np.linspace(0, len(inputs), min(jobs, len(inputs)) + 1).astype(int)
        self.chunks = [ChunkResult(int(a), int(b - a)) for a, b in itertools.pairwise(bounds)]
        self._procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="agq-rtlsim-")
        self.workdir = Path(self._tmp.name)
        self.cpu_seconds = 0.0  # CPU time of the simulator processes: speed independent of other load

    def start(self) -> None:
        """Copy the memory files beside the simulator and start one process per chunk."""
        self._cpu_start = _children_cpu_seconds()
        for rel, src in self.design.memory_files.items():
            (self.workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.workdir / rel).write_bytes(src.read_bytes())
        for k, chunk in enumerate(self.chunks):
            lo, hi = chunk.first_image * self.in_words, (chunk.first_image + chunk.images) * self.in_words
            path = self.workdir / f"input_{k}.hex"
            path.write_text("".join(f"{w:x}\n" for w in self.words[lo:hi]))
            cmd = [
                str(self.simulator.binary), "--input", path.name,
                "--outputs", str(chunk.images * self.out_words), "--stall-prob", repr(self.stall_prob),
                "--seed", str(self.seed + k), "--watchdog", str(self.watchdog),
                "--max-cycles", str((chunk.images + 1) * self.max_cycles_per_image),
            ]
            # stderr goes to a file: RTL $warning floods must not fill a pipe and block the simulator
            with (self.workdir / f"stderr_{k}.txt").open("w") as err:
                proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=err, text=True,
                                        bufsize=1 << 16)
            self._procs.append(proc)
            thread = threading.Thread(target=self._collect, args=(proc, chunk), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _collect(self, proc: subprocess.Popen, chunk: ChunkResult) -> None:
        for line in proc.stdout:
            kind, *rest = line.split()
            if kind == "O":
                chunk.cycles.append(int(rest[0]))
                chunk.words.append(int(rest[1], 16))
                if self.on_image and len(chunk.words) % self.out_words == 0:
                    self.on_image()
            elif kind == "D":
                chunk.total_cycles = int(rest[0])
        proc.wait()

    def wait(self) -> list[ChunkResult]:
        """Every chunk's result; AgqError with the testbench's message when a simulator failed."""
        for thread in self._threads:
            thread.join()
        self.cpu_seconds = _children_cpu_seconds() - self._cpu_start
        for k, proc in enumerate(self._procs):
            if proc.returncode != 0:
                lines = (self.workdir / f"stderr_{k}.txt").read_text().strip().splitlines()
                errors = [ln for ln in lines if "agq-tb: error" in ln or "%Error" in ln] or lines
                raise AgqError(
                    f"RTL simulation of images {self.chunks[k].first_image}.."
                    f"{self.chunks[k].first_image + self.chunks[k].images - 1} failed (exit "
                    f"{proc.returncode}): {errors[0].strip() if errors else 'no message'}"
                )
        return self.chunks

    def close(self) -> None:
        """Stop any simulator still running and delete the working folder."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for proc in self._procs:
            proc.stdout.close()
        self._tmp.cleanup()

    def __enter__(self) -> ChunkedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
