"""What a fine-tuning step costs per method: seconds per step and peak memory, as ratios to plain.

Each measurement runs in a fresh Python process (one torch thread), so that the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that method's alone; the increment over the RSS just
before the first step is the training-time memory of the step. The methods are measured in interleaved
rounds (plain, AG, ... , plain, AG, ...) and the median over rounds is reported, because the machine is
shared and a slow moment should hit every method alike. All methods see the same batch.

``plain_ag`` is the one-pass design (the default model's), ``plain_ag_two_pass`` the paper text's (the
library's default ``ag.design``). It also checks whether the fused two-pass AG step (``ag.fused``) changes
results: the same steps from the same start with both settings, comparing the losses and F's weights
afterwards.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agq.bench.accuracy import BASE_CONFIG

ONE_PASS = ["ag.enabled=true", "ag.design=one_pass"]
TWO_PASS = ["ag.enabled=true", "ag.design=two_pass"]
METHODS: dict[str, list[str]] = {
    "plain": [],
    "plain_ag": ONE_PASS,
    "plain_ag_two_pass": TWO_PASS,
    "plain_ag_two_pass_fused": [*TWO_PASS, "ag.fused=true"],
    "plain_ag_ssp": [*ONE_PASS, "ssp.enabled=true"],
    "plain_ag_two_pass_ssp": [*TWO_PASS, "ssp.enabled=true"],
    "plain_kd": ["baseline.kd=true"],
    "plain_aux": ["baseline.aux_losses=true"],
    "residual": ["model.arch=residual"],
}


def _objective(overrides: list[str], batch: int, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """The row's objective (F freshly initialised with ``seed``), an Adam optimiser and one fixed batch."""
    import torch
    from agq.training.config import load_config
    from agq.training.models import build_model
    from agq.training.objective import build_objective

    cfg = load_config(BASE_CONFIG, overrides)
    torch.manual_seed(seed)
    objective = build_objective(build_model(cfg.model), cfg).train()
    optimizer = torch.optim.Adam(objective.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(seed)
    size = (batch, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    x = torch.randint(0, 256, size, generator=gen).float()
    y = torch.randint(0, cfg.model.num_classes, (batch,), generator=gen)
    return objective, optimizer, x, y


def _step(objective: Any, optimizer: Any, x: Any, y: Any) -> float:
    loss, _ = objective(x, y, 0.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss)


def measure(method: str, batch: int, steps: int, warmup: int = 2) -> dict[str, Any]:
    """Seconds per step (median of ``steps``) and memory of ``method``; run in a fresh process."""
    import resource

    import psutil
    import torch

    torch.set_num_threads(1)
    objective, optimizer, x, y = _objective(METHODS[method], batch)
    rss_before = psutil.Process().memory_info().rss
    for _ in range(warmup):
        _step(objective, optimizer, x, y)
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        _step(objective, optimizer, x, y)
        times.append(time.perf_counter() - begin)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"method": method, "step_s": statistics.median(times), "peak_rss_mib": peak / 2**20,
            "step_rss_mib": (peak - rss_before) / 2**20}


def fused_equality(batch: int, steps: int = 5) -> dict[str, Any]:
    """Train ``steps`` steps naive and fused from the same start; the largest differences between them."""
    import torch

    torch.set_num_threads(1)
    runs = {}
    for name in ("plain_ag_two_pass", "plain_ag_two_pass_fused"):
        objective, optimizer, x, y = _objective(METHODS[name], batch)
        losses = [_step(objective, optimizer, x, y) for _ in range(steps)]
        runs[name] = (losses, objective.deployable().state_dict())
    (la, wa), (lb, wb) = runs["plain_ag_two_pass"], runs["plain_ag_two_pass_fused"]
    weight_diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].numel())
    loss_diff = max(abs(a - b) for a, b in zip(la, lb, strict=True))
    return {"steps": steps, "max_loss_diff": loss_diff, "max_weight_diff": weight_diff,
            "identical": loss_diff == 0.0 and weight_diff == 0.0}


def run_cost(batch: int, steps: int, rounds: int, out: Path) -> dict[str, Any]:
    """Measure every method in ``rounds`` interleaved rounds of fresh processes; write ``out`` (JSON)."""
    from agq.progress import bar

    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    for _ in bar(range(rounds), desc="cost rounds", unit="round"):
        for method in METHODS:
            result = subprocess.run([sys.executable, "-m", "agq.bench.cost", method, str(batch), str(steps)],
                                    env=env, check=True, capture_output=True, text=True)
            samples[method].append(json.loads(result.stdout.splitlines()[-1]))
    table = {m: {k: statistics.median(s[k] for s in runs) for k in ("step_s", "peak_rss_mib", "step_rss_mib")}
             for m, runs in samples.items()}
    base = table["plain"]
    for entry in table.values():
        entry["time_ratio"] = entry["step_s"] / base["step_s"]
        entry["memory_ratio"] = entry["step_rss_mib"] / base["step_rss_mib"]
    report = {"batch": batch, "steps": steps, "rounds": rounds, "config": str(BASE_CONFIG),
              "methods": table, "samples": samples, "fused_equality": fused_equality(batch)}
    from agq.io import write_json

    write_json(out, report, indent=1)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"## Cost of one fine-tuning step (batch {report['batch']}, 1 CPU thread, median of "
             f"{report['rounds']} rounds x {report['steps']} steps)", "",
             "| method | s / step | x plain | peak RSS MiB | step memory MiB (over model) | x plain |",
             "|---|---|---|---|---|---|"]
    for name, e in report["methods"].items():
        lines.append(f"| {name} | {e['step_s']:.4f} | {e['time_ratio']:.2f} | {e['peak_rss_mib']:.0f} | "
                     f"{e['step_rss_mib']:.1f} | {e['memory_ratio']:.2f} |")
    lines.append("\nSteps run at fine-tuning progress 0, where SSP keeps half of the fragments in full "
                 "precision (delta 0.5), which skips their quantizers; step memory = peak RSS minus RSS "
                 "before the first step.")
    eq = report["fused_equality"]
    lines.append(f"\nFused vs naive AG after {eq['steps']} identical steps: largest loss difference "
                 f"{eq['max_loss_diff']:.3g}, largest weight difference {eq['max_weight_diff']:.3g} "
                 f"({'bit-identical' if eq['identical'] else 'not bit-identical: float summation order'}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
