"""The issue's two readings put into words from the paired differences, so that a report states them
instead of leaving them to be worked out from the intervals by eye: whether the setting has a gap that
survives converged fine-tuning (plan (6)'s rule in configs/bench/mnist_deep26_96.yaml), and whether a
row closes the gap (at least two thirds of it, with its 95 % interval against plain above zero).

Neither is read from fewer than MIN_SEEDS paired seeds: with two, the interval's half-width is 12.7 /
sqrt(2) standard deviations (Student's t, one degree of freedom), so "not above zero" is all but certain and
a part-way folder would read "no gap shown" before its plan is in. "Shown", because an interval holding
zero says the seeds do not establish a gap, not that there is none. The setting's two differences are
read over the seeds they share (bench.table.setting_pairs)."""

from __future__ import annotations

from typing import Any

TWO_THIRDS = 2 / 3
MIN_SEEDS = 3


def above_zero(entry: dict[str, Any] | None) -> bool | None:
    """Whether a paired difference's 95 % interval lies above zero; None under MIN_SEEDS seeds."""
    if entry is None or entry["n"] < MIN_SEEDS:  # ci95 exists from two seeds on
        return None
    return entry["mean"] - entry["ci95"] > 0


def seeds_read(entry: dict[str, Any] | None) -> str:
    """The seeds a paired difference is read from, for the verdict's own line."""
    seeds = [] if entry is None else entry["seeds"]
    return f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds)) or 'none'})"


def setting_outcome(gap: bool | None, gains: bool | None) -> str | None:
    """``gap`` (residual - plain) and ``gains`` (plain_2x - plain), each ``above_zero`` of its paired
    difference, read together; None until both have MIN_SEEDS seeds."""
    if gap is None or gains is None:
        return None
    if gains:
        no_gap = "" if gap else "; no gap shown at this length either: residual - plain not above zero"
        return ("not converged (plain with twice the epochs still gains beyond noise: plain_2x - plain above "
                f"zero{no_gap})")
    if gap:
        return ("converged with a gap (residual - plain above zero; plain_2x - plain not: longer fine-tuning "
                "no longer gains beyond noise)")
    return "no gap shown (residual - plain not above zero)"


def setting_line(gap_pair: dict[str, Any] | None, gains_pair: dict[str, Any] | None) -> str | None:
    """The report's sentence on the setting, naming the seeds it is read from, or saying why it is not
    read; None where neither difference exists (a report without those rows)."""
    if gap_pair is None and gains_pair is None:
        return None
    pairs = f"residual - plain over {seeds_read(gap_pair)}, plain_2x - plain over {seeds_read(gains_pair)}"
    outcome = setting_outcome(above_zero(gap_pair), above_zero(gains_pair))
    if outcome is None:
        return f"The setting is not read ({pairs}; a reading needs {MIN_SEEDS} seeds of each)."
    return f"The setting, by the 95 % intervals below ({pairs}): {outcome}."


def closes_gap(gap_entry: dict[str, Any], gap: bool | None) -> str:
    """The issue's test for one row from its share of the gap and its difference to plain over the same
    seeds (bench.table.gap_recovered), read only where the setting has a gap (``gap``: ``above_zero`` of
    residual - plain, the same value ``setting_outcome`` reads). The row's own seeds are checked first: a
    row with fewer than MIN_SEEDS is not read whatever the gap, which has at least the row's seeds."""
    share, helps = gap_entry["share"], above_zero(gap_entry["against_plain"])
    if helps is None or gap is None:
        return f"not read: under {MIN_SEEDS} seeds of the row with plain and residual"
    if not gap:
        return "not read: no gap shown"
    if share >= TWO_THIRDS and helps:
        return "closes the gap (at least two thirds, interval against plain above zero)"
    reasons = [*(["under two thirds"] if share < TWO_THIRDS else []),
               *([] if helps else ["interval against plain not above zero"])]
    return f"does not close the gap ({', '.join(reasons)})"
