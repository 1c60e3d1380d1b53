"""The rtlsim report: ``<build>/rtlsim/report.json`` (every number) and ``report.md`` (for people).

They go into a sub-folder because the build folder's own ``report.json`` belongs to ``agq build``.
``hardware_logits.npy`` beside them holds the simulated integer logits (images x classes, int64).
Every file is written atomically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from agq.io import atomic_write_bytes

FOLDER = "rtlsim"
LOGITS = "hardware_logits.npy"


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _verdicts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(reference, "k/n bit-exact ...") for every reference the report used, FINN's first."""
    n, exact = report["images"], report["bit_exact"]
    rows = [("FINN's Python execution of the partition", f"{exact['finn_python']}/{n}")]
    if "pytorch" in report["references"]:
        ties = exact["pytorch_float_ties"]
        rows.append(("PyTorch integer logits", f"{exact['pytorch']}/{n} ({ties} float ties)"))
    if "expected" in report["references"]:
        rows.append((f"expected outputs {report['expected']}", f"{exact['expected']}/{n}"))
    return rows


def _top1(report: dict[str, Any]) -> str:
    accuracy = report["accuracy"]
    return "n/a (no labels)" if accuracy is None else f"{100 * accuracy['top1']:.2f} %"


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    n, exact, perf, cyc = report["images"], report["bit_exact"], report["performance"], report["cycles"]
    sim = report["simulation"]
    verdicts = ", ".join(f"{count} vs {ref}" for ref, count in _verdicts(report))
    lines = [
        f"{n} images ({report['inputs']}), stall probability {report['stall_prob']}: bit-exact {verdicts}; "
        f"hardware top-1 {_top1(report)}",
        f"cycles: first output {cyc['first_output']:,}, first image {cyc['first_image']:,}, steady state "
        f"{_fmt(cyc['steady_state_per_image'])} per image = {_fmt(perf['fps'])} frames/s at "
        f"{perf['clock_mhz']:g} MHz; FINN estimate {perf['finn_estimate_cycles_per_image']:,} cycles "
        f"(ratio {_fmt(perf['ratio_to_finn_estimate'], '.3f')})",
        f"simulation: {_fmt(sim['cycles_per_second'])} cycles/s ({_fmt(sim['cycles_per_cpu_second'])} per "
        f"CPU second), {sim['images_per_second']:.1f} images/s, "
        f"{sim['wall_seconds']:.1f} s wall; simulator "
        + ("from cache" if sim["simulator_cached"] else f"built in {sim['simulator_build_seconds']:.1f} s"),
    ]
    for diff in exact.get("differences", []):
        verdict = "float tie" if diff["float_tie"] else "ERROR"
        lines.append(f"  image {diff['image']} differs from PyTorch ({verdict}): {diff['cause']}")
    if exact["finn_python_differing_images"]:
        lines.append(f"  images differing from FINN Python: {exact['finn_python_differing_images']}")
    if exact.get("expected_differing_images"):
        lines.append(f"  images differing from the expected outputs: {exact['expected_differing_images']}")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    n, exact, perf, cyc = report["images"], report["bit_exact"], report["performance"], report["cycles"]
    sim = report["simulation"]
    rows = [
        ("images", f"{n} ({report['inputs']})"),
        ("references", ", ".join(ref for ref, _ in _verdicts(report))),
        ("output stall probability", f"{report['stall_prob']} (seed {report['seed']})"),
        *((f"bit-exact vs {ref}", count) for ref, count in _verdicts(report)),
    ]
    if "pytorch" in report["references"]:
        rounded = exact["pytorch_rounded_float_logits"]
        rows.append(("PyTorch float logits / scale, rounded, equal", f"{rounded}/{n}"))
    rows += [
        ("hardware top-1", _top1(report)),
        ("cycles to the first output", f"{cyc['first_output']:,}"),
        ("cycles to the first image's last output", f"{cyc['first_image']:,}"),
        ("steady-state cycles per image", _fmt(cyc["steady_state_per_image"])),
        (f"frames/s at {perf['clock_mhz']:g} MHz", _fmt(perf["fps"])),
        ("FINN estimate (cycles per image, bottleneck)",
         f"{perf['finn_estimate_cycles_per_image']:,} ({perf['finn_estimate_bottleneck']})"),
        ("simulated / estimated cycles per image", _fmt(perf["ratio_to_finn_estimate"], ".3f")),
        ("simulation speed",
         f"{_fmt(sim['cycles_per_second'])} cycles/s ({_fmt(sim['cycles_per_cpu_second'])} per CPU second), "
         f"{sim['images_per_second']:.1f} images/s"),
        ("simulator", f"{sim['verilator']}, {sim['nodes']} nodes, {sim['streams']} AXI streams, "
         + ("cached" if sim["simulator_cached"] else f"built in {sim['simulator_build_seconds']} s")),
        ("finn-rtllib files fixed for Verilator", ", ".join(sim["rtllib_fixes"]) or "none"),
    ]
    text = "# RTL simulation report\n\n" + f"Build: `{report['build_dir']}`. Result: "
    text += ("**bit-exact**" if report["ok"] else "**NOT bit-exact**") + "\n\n| | |\n|---|---|\n"
    text += "".join(f"| {k} | {v} |\n" for k, v in rows)
    if exact.get("differences"):
        text += "\n## Differences from PyTorch\n\n"
        text += "".join(
            f"- image {d['image']} ({'float tie' if d['float_tie'] else 'ERROR'}): {d['cause']}\n"
            for d in exact["differences"]
        )
    return text


def write_report(build_dir: Path, report: dict[str, Any], logits: np.ndarray) -> Path:
    """Write the report files and the hardware's integer logits; returns the folder."""
    folder = Path(build_dir) / FOLDER
    buffer = io.BytesIO()
    np.save(buffer, logits)
    atomic_write_bytes(folder / LOGITS, buffer.getvalue())
    atomic_write_bytes(folder / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(folder / "report.md", markdown(report).encode())
    return folder
