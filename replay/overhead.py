"""A trial's cost besides training, read from a real sweep's progress lines (``idensenet sweep``
prints one per trial event with the driver's clock, :class:`sweeper.sweep.ProgressPrinter`).

Per trial: **start** = time of its first epoch line − time of its ``started`` line − that epoch's own
seconds (Tune's trial actor, the Train controller and worker group, the process group, data, model and
its initialisation), and **end** = time of its ``finished`` / ``stopped`` line − time of its last epoch
line. The replay charges a trial their sum, before its first epoch (:data:`replay.simulate.START_COST_S`).
"""

from __future__ import annotations

import re
import statistics

_LINE = re.compile(r"^\[\s*(?P<t>[0-9.]+)s\] (?P<id>\S+) (?P<what>started|epoch (?P<e>\d+)/\d+|finished|stopped by ASHA|diverged)"
                   r"(?P<rest>.*)$")
_SECONDS = re.compile(r"\s([0-9.]+) s$")


def trial_overheads(lines: list[str]) -> dict[str, dict[str, float]]:
    """Trial id -> ``start`` and ``end`` seconds (trials with a start, an epoch and an end line)."""
    seen: dict[str, dict[str, float]] = {}
    for line in lines:
        m = _LINE.match(line.rstrip())
        if not m:
            continue
        t, rec = float(m["t"]), seen.setdefault(m["id"], {})
        if m["what"] == "started":
            rec["t_start"] = t
        elif m["e"] is not None:
            s = _SECONDS.search(m["rest"])
            if "t_first" not in rec and s:
                rec["t_first"], rec["first_s"] = t, float(s.group(1))
            rec["t_last"] = t
        else:
            rec["t_end"] = t
    return {tid: {"start": r["t_first"] - r["t_start"] - r["first_s"], "end": r["t_end"] - r["t_last"]}
            for tid, r in seen.items() if {"t_start", "t_first", "t_end"} <= set(r)}


def median_overhead(lines: list[str]) -> tuple[float, float, int]:
    """(median start, median end, trials measured)."""
    per = trial_overheads(lines)
    if not per:
        return float("nan"), float("nan"), 0
    return (statistics.median(v["start"] for v in per.values()), statistics.median(v["end"] for v in per.values()),
            len(per))
