"""The issue's two readings put into words from the paired differences, so that a report states them
instead of leaving them to be worked out from the intervals by eye: whether the setting has a gap that
survives converged fine-tuning (plan (6)'s rule in configs/bench/mnist_deep26_96.yaml), and whether a
row closes the gap (at least two thirds of it, with its 95 % interval against plain above zero)."""

from __future__ import annotations

from typing import Any

TWO_THIRDS = 2 / 3


def above_zero(entry: dict[str, Any] | None) -> bool | None:
    """Whether a paired difference's 95 % interval lies above zero; None where it has none (one seed)."""
    if entry is None or entry.get("ci95") is None:
        return None
    return entry["mean"] - entry["ci95"] > 0


def setting_outcome(gap: bool | None, gains: bool | None) -> str | None:
    """``gap`` (residual - plain) and ``gains`` (plain_2x - plain), each ``above_zero`` of its paired
    difference, read together; None until both have an interval."""
    if gap is None or gains is None:
        return None
    if gains:
        no_gap = "" if gap else "; no gap at this length either: residual - plain not above zero"
        return ("not converged (plain with twice the epochs still gains beyond noise: plain_2x - plain above "
                f"zero{no_gap})")
    if gap:
        return ("converged with a gap (residual - plain above zero; plain_2x - plain not: longer fine-tuning "
                "no longer gains beyond noise)")
    return "no gap (residual - plain not above zero)"


def closes_gap(gap_entry: dict[str, Any], gap: bool | None) -> str:
    """The issue's test for one row from its share of the gap and its difference to plain over the same
    seeds (bench.table.gap_recovered), read only where the setting has a gap (``gap``: ``above_zero`` of
    residual - plain, the same value ``setting_outcome`` reads)."""
    if gap is None:
        return "not read: residual - plain has no interval yet"
    if not gap:
        return "not read: no gap"
    share, helps = gap_entry["share"], above_zero(gap_entry["against_plain"])
    if helps is None:
        return "not read: one seed"
    if share >= TWO_THIRDS and helps:
        return "closes the gap (at least two thirds, interval against plain above zero)"
    reasons = [*(["under two thirds"] if share < TWO_THIRDS else []),
               *([] if helps else ["interval against plain not above zero"])]
    return f"does not close the gap ({', '.join(reasons)})"
