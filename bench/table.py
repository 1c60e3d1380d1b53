"""Turn run records into the accuracy tables (mean and standard deviation over seeds) and Fig. 3.

A record is one finished run: ``{"row", "arch", "seed", "config", "history": [per-epoch rows]}`` as
written by bench.accuracy (or built from a user's run folders by bench.fill_table). Only numbers found
in records enter the tables.
"""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any

from agq.bench import verdict
from agq.bench.rows import ABLATIONS, ARCHS, BY_NAME, PRETRAIN, PRETRAINED_ONLY, ROWS, SCALE_LABELS

from agq.errors import AgqError

METRIC = "test_F_top1"
FIG3_ROWS = ("plain", "plain_ag", "plain_ag_two_pass", "plain_ag_ssp", "residual")
Stats = dict[str, dict[str, Any]]


def record_files(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``*.json`` record in ``folder`` with its path; a file that is no record is an error naming it."""
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AgqError(f"run record {path} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not {"row", "seed", "history"} <= set(record):
            raise AgqError(f"run record {path}: needs the keys row, seed and history")
        if not isinstance(record["row"], str) or type(record["seed"]) is not int:
            raise AgqError(f"run record {path}: row must be a name and seed a whole number")
        records.append((path, record))
    return records


def load_records(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` record in ``folder`` (:func:`record_files` without the paths)."""
    return [record for _, record in record_files(folder)]


def epoch_values(record: dict[str, Any], phase: str = "finetune", metric: str = METRIC) -> list[float]:
    """``metric`` after each epoch of ``phase`` that measured it, in order."""
    return [h[metric] for h in record["history"] if h.get("phase") == phase and h.get(metric) is not None]


def final_value(record: dict[str, Any], phase: str = "finetune", metric: str = METRIC) -> float | None:
    """``metric`` after the last epoch of ``phase`` (None when the run has no such epoch)."""
    values = epoch_values(record, phase, metric)
    return values[-1] if values else None


FP_ROWS = dict(zip(ARCHS, PRETRAINED_ONLY, strict=True))  # pre-training -> the row of its FP network


def pretraining_of(record: dict[str, Any]) -> str:
    """Which shared pre-training a record ran or started from (bench.rows.Row.pretrain)."""
    name = record["row"]
    arch = record.get("arch", "plain")
    return record.get("pretrain") or (arch if name == PRETRAIN else BY_NAME[name].pretrain)


TIMING = ("time_s", "cpu_s", "eval_s")  # differ from run to run; every other history entry must not


def differing_epoch(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int | None:
    """The first epoch (from 1) where two histories differ, timings aside (None where they do not); a
    history cut short differs just after its end."""
    a, b = ([{k: v for k, v in e.items() if k not in TIMING} for e in h] for h in (a, b))
    if a == b:
        return None
    pairs = enumerate(zip(a, b, strict=False), start=1)
    return next((epoch for epoch, (x, y) in pairs if x != y), min(len(a), len(b)) + 1)


def pretraining_history(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs of the pre-training a record ran or started from: equal histories, one network."""
    return [h for h in record["history"] if h.get("phase") == "pretrain"]


def check_shared_starts(records: list[dict[str, Any]], names: list[str] | None = None) -> None:
    """Rows are paired by their shared pre-training only if they did start from one network. A
    pre-training run again in another environment (another machine's floating point) is another network
    under the same seed, config and code, so every record of one (pre-training, seed) must carry the same
    pre-training history, timings aside; a mix is one line naming two records (by ``names``, parallel to
    ``records``, where given: across settings a row's name alone is ambiguous)."""
    first: dict[tuple[str, int], tuple[str, list[dict[str, Any]]]] = {}
    for i, record in enumerate(records):
        pre, seed = pretraining_of(record), int(record["seed"])
        history = pretraining_history(record)
        name = f"{PRETRAIN}_{pre}" if record["row"] == PRETRAIN else record["row"]
        label = names[i] if names else f"{name}_s{seed}"
        other, expected = first.setdefault((pre, seed), (label, history))
        epoch = differing_epoch(history, expected)
        if epoch is not None:
            raise AgqError(f"records {other} and {label} started from different {pre} pre-trainings "
                           f"(they differ at pre-training epoch {epoch}), so they are not paired: keep the "
                           "records of one pre-training per results folder")


PLATEAU_MARKS = {"50%": 0.5, "75%": 0.75, "100%": 1.0}  # share of pre-training's epochs where top-1 is read


def pretraining(records: list[dict[str, Any]]) -> Stats:
    """Per full-precision row: F's test top-1 at half, three quarters and the end of pre-training, and the
    final training loss, over seeds. Whether pre-training reached a plateau is read from these: the last
    epoch's change alone says little under a cosine schedule, whose last steps are tiny."""
    by_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for record in records:
        pre = pretraining_of(record)
        if pre in FP_ROWS and epoch_values(record, "pretrain"):
            by_seed.setdefault(FP_ROWS[pre], {}).setdefault(int(record["seed"]), record)
    out: Stats = {}
    for name, runs in by_seed.items():
        top1 = {seed: epoch_values(r, "pretrain") for seed, r in runs.items()}
        epochs = min(len(v) for v in top1.values())
        marks = {mark: max(1, round(f * epochs)) for mark, f in PLATEAU_MARKS.items()}
        out[name] = {"epochs": epochs, "epoch_at": marks, "top1_at": {
            mark: summarize({seed: v[e - 1] for seed, v in top1.items()}) for mark, e in marks.items()}}
        loss = {seed: epoch_values(r, "pretrain", "train_loss") for seed, r in runs.items()}
        if all(loss.values()):
            out[name]["final_train_loss"] = summarize({seed: v[-1] for seed, v in loss.items()})
    return out


def pretraining_markdown(stats: Stats) -> str:
    """One row per FP network; columns are shares of each row's own epochs (the two may differ)."""
    lines = ["### Full-precision pre-training: is it at a plateau?", "",
             "| network | epochs | " + " | ".join(f"top-1 % after {m} of them" for m in PLATEAU_MARKS)
             + " | training loss at the end | seeds |", "|---" * (len(PLATEAU_MARKS) + 4) + "|"]
    for name, s in stats.items():
        at = [cell(s["top1_at"][m]) for m in PLATEAU_MARKS]
        loss = "-" if "final_train_loss" not in s else f"{s['final_train_loss']['mean']:.4f}"
        n = s["top1_at"]["100%"]["n"]
        lines.append(f"| {BY_NAME[name].label} | {s['epochs']} | {' | '.join(at)} | {loss} | {n} |")
    return "\n".join(lines) + "\n"


def per_seed(records: list[dict[str, Any]], metric: str = METRIC) -> dict[str, dict[int, float]]:
    """{row: {seed: final fine-tuned value}}; ``fp`` (``fp_residual``) is the plain (residual) network
    after its shared pre-training, read from any record that started from it."""
    table: dict[str, dict[int, float]] = {}
    for record in records:
        name, seed = record["row"], int(record["seed"])
        if name != PRETRAIN:
            if name not in BY_NAME:
                raise AgqError(f"run record of unknown row {name!r} (known: {', '.join(BY_NAME)})")
            value = final_value(record, "finetune", metric)
            if value is not None:
                table.setdefault(name, {})[seed] = value
        pre = pretraining_of(record)
        if pre in FP_ROWS and metric.startswith("test_F"):
            value = final_value(record, "pretrain", metric)
            if value is not None:
                table.setdefault(FP_ROWS[pre], {}).setdefault(seed, value)
    return table


def summarize(values: dict[int, float]) -> dict[str, Any]:
    """Mean, sample standard deviation (n - 1) and the half-width of the 95 % confidence interval of the
    mean (Student's t, n - 1 degrees of freedom) over seeds; std and ci95 are None for a single seed."""
    from scipy.stats import t

    xs = [values[s] for s in sorted(values)]
    std = statistics.stdev(xs) if len(xs) > 1 else None
    ci95 = None if std is None else float(t.ppf(0.975, len(xs) - 1)) * std / len(xs) ** 0.5
    return {"n": len(xs), "mean": statistics.fmean(xs), "std": std, "ci95": ci95,
            "seeds": sorted(values), "values": xs}


def summary(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row: F's top-1 and top-5 (and H's top-1 where AG ran) summarised over seeds."""
    out: dict[str, dict[str, Any]] = {}
    for metric in ("test_F_top1", "test_F_top5", "test_H_top1"):
        for name, values in per_seed(records, metric).items():
            out.setdefault(name, {})[metric] = summarize(values)
    return out


# The main rows that try to close the plain-to-residual gap, each read against plain (does it help?),
# residual (what is left) and plain_2x (does it beat plain given the compute); every row with a
# reference (bench/rows.py: the ablations and AG on the residual network) against that row.
METHODS = ("plain_ag", "plain_ag_two_pass", "plain_ag_ssp", "plain_kd", "plain_aux")
# (a, b): a - b per seed; runs of one architecture and seed start from the same pre-trained weights.
# residual - plain_2x is the convergence test: the gap survives if it stays above zero
PAIRS = (("residual", "plain"), ("plain_2x", "plain"), ("residual", "plain_2x"),
         *((a, b) for m in METHODS for a, b in ((m, "plain"), ("residual", m), (m, "plain_2x"))),
         ("plain_ag_ssp", "plain_ag"), ("plain_ag", "plain_ag_two_pass"),
         ("residual_log", "plain_log"),  # the gap with both networks' scales in the log domain
         *((r.name, r.reference) for r in ROWS if r.reference),
         # the SSP fragment ablations also against the paper's default, blockdrop W/A (paper Table 4)
         *((r.name, "plain_ag_ssp") for r in ROWS if r.group == "ablation" and "ssp.enabled" in r.overrides))


def difference(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """``a - b`` seed by seed over the seeds both have, summarised (None when they share none)."""
    seeds = sorted(set(a) & set(b))
    return summarize({s: a[s] - b[s] for s in seeds}) if seeds else None


def paired(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per pair of rows, the difference of F's final top-1 seed by seed (seeds both rows have)."""
    values = per_seed(records)
    pairs = {f"{a} - {b}": difference(values.get(a, {}), values.get(b, {})) for a, b in PAIRS}
    return {name: entry for name, entry in pairs.items() if entry is not None}


def on_seeds(entry: dict[str, Any], seeds: set[int]) -> dict[str, Any]:
    """A paired difference summarised again over ``seeds`` only (an entry of no seeds when it has none
    of them: no verdict reads it, bench/verdict.py)."""
    kept = {s: v for s, v in zip(entry["seeds"], entry["values"], strict=True) if s in seeds}
    return summarize(kept) if kept else {"n": 0, "seeds": [], "values": []}


def setting_pairs(pairs: Stats) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """residual - plain and plain_2x - plain, over the seeds both have where both exist: the setting's
    two tests read the same networks, so that a part-way folder whose plain_2x row lags (the longest job)
    does not read a gap of four seeds against the gains of three."""
    gap, gains = pairs.get("residual - plain"), pairs.get("plain_2x - plain")
    if gap is None or gains is None:
        return gap, gains
    common = set(gap["seeds"]) & set(gains["seeds"])
    return on_seeds(gap, common), on_seeds(gains, common)


# plain rows only: a share of the plain-to-residual gap means nothing for a residual variant
GAP_METHODS = (*METHODS, "plain_2x", *(r.name for r in ROWS if r.group == "ablation" and r.arch == "plain"))


def gap_recovered(records: list[dict[str, Any]], method: str) -> dict[str, Any] | None:
    """Share of the plain-to-residual gap that ``method`` closes, (method - plain) / (residual - plain),
    from the means over the seeds all three rows have (None without such seeds or gap), with ``method -
    plain`` paired over the same seeds: the two numbers the issue's test reads (bench/verdict.py)."""
    values = per_seed(records)
    rows = ("plain", "residual", method)
    seeds = sorted(set.intersection(*(set(values.get(n, {})) for n in rows)))
    if not seeds:
        return None
    plain, residual, other = (statistics.fmean(values[n][s] for s in seeds) for n in rows)
    if residual == plain:
        return None
    against_plain = summarize({s: values[method][s] - values["plain"][s] for s in seeds})
    return {"share": (other - plain) / (residual - plain), "seeds": seeds, "against_plain": against_plain}


def cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    std = "" if entry["std"] is None else f" ± {entry['std']:.2f}"
    return f"{entry['mean']:.2f}{std}"


def signed_values(entry: dict[str, Any]) -> str:
    """The per-seed values of a paired difference, signed."""
    return ", ".join(f"{v:+.2f}" for v in entry["values"])


def interval(entry: dict[str, Any]) -> str:
    if entry.get("ci95") is None:
        return "-"
    return f"[{entry['mean'] - entry['ci95']:+.2f}, {entry['mean'] + entry['ci95']:+.2f}]"


def setting_scale(records: list[dict[str, Any]]) -> str:
    """The weight-scale domain of the rows that do not set their own (the setting's, e.g. "log" in
    mnist_deep26_96_log), read from the records' saved configs; records without one are linear runs."""
    found = {str(r["config"].get("model", {}).get("weight_scale", "linear"))
             if isinstance(r.get("config"), dict) else "linear"
             for r in records if "model.weight_scale" not in getattr(BY_NAME.get(r["row"]), "overrides", {})}
    if len(found) > 1:
        return "mixed"
    return found.pop() if found else "linear"


def markdown(stats: Stats, title: str, pairs: Stats | None = None, gaps: Stats | None = None,
             scale: str = "linear") -> str:
    """The main table (paper's Table 6 layout), paired differences and the ablation tables; ``scale`` is
    the setting's weight-scale domain, which names the domain of the rows plain and residual."""
    lines = [f"## {title}", "", "| method | top-1 % (F) | top-5 % (F) | top-1 % (H) | seeds |",
             "|---|---|---|---|---|"]
    for row in ROWS:
        if row.group == "main" and row.name in stats and "test_F_top1" in stats[row.name]:
            s = stats[row.name]
            lines.append(f"| {row.label} | {cell(s.get('test_F_top1'))} | {cell(s.get('test_F_top5'))} | "
                         f"{cell(s.get('test_H_top1'))} | {s['test_F_top1']['n']} |")
    pairs = pairs or {}
    gap_pair, gains_pair = setting_pairs(pairs)
    gap = verdict.above_zero(gap_pair)
    line = verdict.setting_line(gap_pair, gains_pair)
    if line:
        lines += ["", line]
    present = {m: g for m, g in (gaps or {}).items() if g is not None}
    if present:
        lines += ["", "Share of the plain-to-residual gap closed (means over the seeds that plain, residual",
                  "and the row share), the issue's test (at least two thirds, interval against plain above",
                  "zero) and the row's paired difference to plain on those seeds, with its 95 % interval:",
                  ""]
        lines += [f"- {BY_NAME[m].label}: {100 * g['share']:.0f} % (seeds {', '.join(map(str, g['seeds']))}):"
                  f" {verdict.closes_gap(g, gap)}; against plain {g['against_plain']['mean']:+.2f} "
                  f"{interval(g['against_plain'])}" for m, g in present.items()]
    if pairs:
        lines += ["", "### Paired differences (same seed; the rows of one architecture from one pre-trained "
                  "network), top-1 points", "",
                  "| difference | mean ± std | 95 % CI of the mean | per seed |", "|---|---|---|---|"]
        lines += [f"| {name} | {cell(p)} | {interval(p)} | {signed_values(p)} |"
                  for name, p in pairs.items()]
    for title_, entries in ABLATIONS:
        present = [(n, label, stats[n][METRIC]) for n, label in entries if n in stats]
        if present:
            common = sorted(set.intersection(*(set(e["seeds"]) for _, _, e in present)))
            lines += ["", f"### {title_}", "",
                      f"| variant | top-1 % (F), all seeds | seeds | top-1 % on seeds {common} |",
                      "|---|---|---|---|"]
            for _, label, e in present:
                shared = on_seeds(e, set(common))
                mean = f"{shared['mean']:.2f}" if shared["n"] else "-"  # rows with no seed in common
                label = label.format(scale=SCALE_LABELS.get(scale, scale))
                lines.append(f"| {label} | {cell(e)} | {e['n']} | {mean} |")
    lines.append("\nMean ± sample standard deviation over seeds (n - 1 in the denominator).")
    return "\n".join(lines) + "\n"


Curves = dict[str, dict[int, list[float]]]


def curves(records: list[dict[str, Any]], rows: tuple[str, ...] = FIG3_ROWS) -> Curves:
    """{row: {global epoch: [test top-1 of every seed]}} over the fine-tuning epochs."""
    out: Curves = {}
    for record in records:
        if record["row"] in rows:
            for h in record["history"]:
                if h.get("phase") == "finetune" and h.get(METRIC) is not None:
                    out.setdefault(record["row"], {}).setdefault(int(h["epoch"]), []).append(h[METRIC])
    return out


def fig3_png(records: list[dict[str, Any]]) -> bytes | None:
    """Test top-1 per fine-tuning epoch, mean over seeds with a ±1 std band (the paper's Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    data = curves(records)
    if not data:
        return None
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for name in FIG3_ROWS:
        if name in data:
            epochs = sorted(data[name])
            stats = [summarize(dict(enumerate(data[name][e]))) for e in epochs]
            mean = [s["mean"] for s in stats]
            std = [s["std"] or 0.0 for s in stats]
            ax.plot(epochs, mean, marker="o", label=BY_NAME[name].label)
            ax.fill_between(epochs, [m - d for m, d in zip(mean, std, strict=True)],
                            [m + d for m, d in zip(mean, std, strict=True)], alpha=0.2)
    ax.set(xlabel="fine-tuning epoch", ylabel="test top-1 % (F)",
           title="2-bit plain network (cf. paper Fig. 3)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
