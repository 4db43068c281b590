"""The studies' figures: the toy reproduction (paper Figure 3's layout), the learned concatenation
weights of a checkpoint (paper Figure 10) and a scaling study's best scores against parameters.
Each draws into a path or a file object; the study decides where."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from model.data import toy_sample

from .plots import TOY_EXTENT, pyplot, save_png


def toy_reproduction(rows: Sequence[Mapping[str, Any]], models: Sequence[str], labels: Mapping[str, str],
                     data: Sequence[str], path_or_buf: Any) -> None:
    """Figure 3's layout: the data in the first row, then one row per model (its learned density, the
    mean test NLL of its runs in the title), one column per data set. ``rows``: the runs, each with
    ``model``, ``data``, ``test_nll`` and ``_density`` (log-density on the plotting grid, or None)."""
    fig, axes = pyplot().subplots(1 + len(models), len(data), figsize=(2.6 * len(data), 2.6 * (1 + len(models))),
                                  squeeze=False)
    ext = [-TOY_EXTENT, TOY_EXTENT, -TOY_EXTENT, TOY_EXTENT]
    for j, d in enumerate(data):
        pts = toy_sample(d, 20000, np.random.default_rng(0)).numpy()
        axes[0, j].hist2d(pts[:, 0], pts[:, 1], bins=100, range=[ext[:2], ext[2:]], cmap="viridis")
        axes[0, j].set_title(f"data: {d}", fontsize=8)
        for i, m in enumerate(models, start=1):
            mine = [r for r in rows if r["model"] == m and r["data"] == d and r["_density"] is not None]
            if mine:
                axes[i, j].imshow(np.exp(mine[0]["_density"]), origin="lower", extent=ext, cmap="viridis")
                nll = sum(r["test_nll"] for r in mine) / len(mine)
                axes[i, j].set_title(f"{labels[m]}: {nll:.2f} nats", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    save_png(fig, path_or_buf)


def concatenation_weights(rows: Sequence[Mapping[str, Any]], path_or_buf: Any, title: str) -> None:
    """Heatmaps of η̂₁ (weight of the input x) and η̂₂ (of the new features φ(Wx)) per block and dense
    layer (paper §3.3, Figure 10). ``rows``: one per dense layer, with ``scale``, ``block``, ``layer``,
    ``eta1_hat`` and ``eta2_hat``."""
    blocks = list(dict.fromkeys((r["scale"], r["block"]) for r in rows))
    layers = max(r["layer"] for r in rows)
    fig, axes = pyplot().subplots(1, 2, figsize=(2 + 0.5 * layers * 2, 1 + 0.22 * len(blocks)), squeeze=False)
    for ax, key, name in zip(axes[0], ("eta1_hat", "eta2_hat"), ("η̂₁ (input x)", "η̂₂ (new features φ(Wx))")):
        grid = np.full((len(blocks), layers), np.nan)
        for r in rows:
            grid[blocks.index((r["scale"], r["block"])), r["layer"] - 1] = r[key]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(name, fontsize=8)
        ax.set_xticks(range(layers), [str(i + 1) for i in range(layers)], fontsize=6)
        ax.set_xlabel("dense layer", fontsize=7)
        ax.set_yticks(range(len(blocks)), [f"{'FC' if s == 'fc' else 's' + s} b{b}" for s, b in blocks], fontsize=5)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle(title, fontsize=8)
    save_png(fig, path_or_buf)


def scaling(df: Any, path_or_buf: Any, ylabel: str, published: Mapping[str, Sequence[Sequence[float]]]) -> None:
    """Best test score against parameters, one line per family (``df``: a scaling table with
    ``family``, ``param_count`` and ``test``), with ``published`` points (family -> [parameters,
    score]) as crosses in the same family's colour."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    colours: dict[str, str] = {}
    for family, part in df.dropna(subset=["test"]).groupby("family"):
        part = part.sort_values("param_count")
        colours[family] = f"C{len(colours)}"
        ax.plot(part["param_count"].astype(float), part["test"], "-o", color=colours[family], label=family)
    for family, points in published.items():
        colour = colours.setdefault(family, f"C{len(colours)}")
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker="x", s=50, color=colour,
                   label=f"paper: {family}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{ylabel} (one run, selected on validation)")
    ax.legend()
    save_png(fig, path_or_buf)
