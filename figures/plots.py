"""PNG figures (matplotlib, Agg backend): score per epoch, toy densities, image sample grids, a
confirmation's scores over seeds. Used by
``sweeper`` (a sweep's plots, a full run's figure) and ``studies``; imports only ``model``."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

TOY_EXTENT = 4.0  # the toy densities live in [-4, 4]^2


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path) -> None:
    """Save and close ``fig``: to a path (written to a temporary name, then renamed) or to a binary
    file object."""
    if not isinstance(path, (str, os.PathLike)):
        fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(f"{path}.tmp.png", dpi=110, bbox_inches="tight")
        os.replace(f"{path}.tmp.png", path)
    pyplot().close(fig)


def plot_scores(curves: dict[str, list[tuple[int, float]]], path, ylabel: str) -> None:
    """One line of score against epoch per trial."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, pts in sorted(curves.items()):
        if pts:
            e, s = zip(*pts)
            ax.plot(e, s, marker="o", ms=3, label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(curves.values()):  # a sweep read before its first epoch has no curve to name
        ax.legend(fontsize=7, loc="upper right")
    save_png(fig, path)


def plot_confirmation(runs, summary, path, ylabel: str) -> None:  # noqa: ANN001
    """Per configuration (one row, best mean validation first): each seed's test score as a dot, the
    mean and its 95 % interval as a bar."""
    plt = pyplot()
    arms = list(summary["arm"])
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(arms) + 1.5))
    for y, arm in enumerate(arms):
        pts = runs[(runs["arm"] == arm) & runs["test"].notna()]
        ax.plot(pts["test"], [y] * len(pts), "o", color="C0", alpha=0.6, ms=4)
        row = summary[summary["arm"] == arm].iloc[0]
        if "test_low" in row and math.isfinite(row.get("test_low", math.nan)):
            ax.errorbar(row["test_mean"], y, xerr=[[row["test_mean"] - row["test_low"]], [row["test_high"] - row["test_mean"]]],
                        fmt="s", color="C3", capsize=4, ms=5)
    ax.set_yticks(range(len(arms)), [f"{a}\n{d}" for a, d in zip(arms, summary["describe"])], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{ylabel} at each run's best validation epoch (dots: seeds; square: mean, 95% CI)")
    ax.grid(alpha=0.3, axis="x")
    save_png(fig, path)


def toy_log_density(model, n: int = 120, extent: float = TOY_EXTENT) -> np.ndarray:
    """log p(x) on an n×n grid over [-extent, extent]² (exact 2-D log-det in eval mode)."""
    import torch

    xs = torch.linspace(-extent, extent, n)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1).reshape(-1, 2)
    model.eval()
    out = []
    with torch.no_grad():
        for chunk in grid.split(4096):
            out.append(model.log_prob(chunk).cpu())
    return torch.cat(out).reshape(n, n).numpy()


def plot_toy_densities(
    models: Sequence[tuple[str, object]], path, data: str | None = None, n: int = 56
) -> None:
    """A panel of exp(log p) per model on an n×n grid (title: its label), plus the data when named."""
    plt = pyplot()
    panels = len(models) + (1 if data else 0)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    flat = list(axes.ravel())
    ext = [-TOY_EXTENT, TOY_EXTENT, -TOY_EXTENT, TOY_EXTENT]
    if data:
        from model.data import toy_sample

        pts = toy_sample(data, 5000, np.random.default_rng(0)).numpy()
        ax = flat.pop(0)
        ax.hist2d(pts[:, 0], pts[:, 1], bins=120, range=[ext[:2], ext[2:]], cmap="viridis")
        ax.set_title(f"data: {data}", fontsize=8)
    for (label, model), ax in zip(models, flat):
        logp = toy_log_density(model, n)
        ax.imshow(np.exp(logp), origin="lower", extent=ext, cmap="viridis", interpolation="bilinear")
        ax.set_title(label, fontsize=8)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= panels:
            ax.axis("off")
    save_png(fig, path)


def plot_sample_grid(images, path, n_levels: int, nrow: int = 8) -> None:
    """Samples in [0, 1) from the flow (B, C, H, W) as a grid, quantised to the data's levels."""
    import torch
    from torchvision.utils import make_grid

    x = torch.floor(images.clamp(0, 1 - 1e-6) * n_levels) / (n_levels - 1)
    grid = make_grid(x, nrow=nrow, padding=1).permute(1, 2, 0).cpu().numpy()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None)
    ax.axis("off")
    save_png(fig, path)
