"""The search-efficiency figure: each arm's median regret (with its bootstrap 95 % band) against
cumulative trial-epochs and against simulated wall time, one row per trial count."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.ticker import NullFormatter

from .plots import pyplot, save_png


def anytime_regret(curves: Sequence[Mapping[str, Any]], path_or_buf: Any, workers: int) -> None:
    """``curves``: one per (trial count, arm, axis) with ``trials``, ``arm``, ``axis`` ("trial_epochs" or
    "time_s"), ``x``, ``median``, ``lo``, ``hi`` (arrays) and ``target`` (random search's final median)."""
    counts = sorted({c["trials"] for c in curves})
    fig, axes = pyplot().subplots(len(counts), 2, figsize=(12, 4.2 * len(counts)), squeeze=False)
    arms = list(dict.fromkeys(c["arm"] for c in curves))
    colours = {a: pyplot().cm.tab10(i % 10) for i, a in enumerate(arms)}
    for i, n in enumerate(counts):
        for j, axis in enumerate(("trial_epochs", "time_s")):
            ax = axes[i, j]
            for c in (c for c in curves if c["trials"] == n and c["axis"] == axis):
                x = np.asarray(c["x"]) / (60 if axis == "time_s" else 1)
                ok = np.isfinite(c["median"])
                ax.plot(x[ok], np.asarray(c["median"])[ok], color=colours[c["arm"]], label=c["arm"], lw=1.4)
                lo, hi = np.asarray(c["lo"]), np.asarray(c["hi"])
                band = np.isfinite(lo) & np.isfinite(hi)
                ax.fill_between(x[band], lo[band], hi[band], color=colours[c["arm"]], alpha=0.12, lw=0)
                ax.axhline(c["target"], color="grey", ls=":", lw=0.8)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis collide
            ax.set_yscale("symlog", linthresh=0.01)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("cumulative trial-epochs" if axis == "trial_epochs" else f"simulated minutes (W={workers})")
            ax.set_ylabel("regret of the pick (nats)")
            ax.set_title(f"{n} trials: median over replays, 95 % bootstrap band", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_png(fig, path_or_buf)
