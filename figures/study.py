"""Optuna's views of a sweep's study, and the scores of its trials by family (``idensenet results
NAME --plots``), each as PNG bytes:

* ``importance``: importance of each searched dimension (Optuna's default importance evaluator)
  at **equal fidelity**: every searched trial is scored by its validation value at the same epoch,
  the deepest epoch that at least :data:`MIN_TRIALS` searched trials that did not fail reached (with
  ASHA: usually a rung), so a trial stopped early is compared with a finished one on the epoch both
  trained, never on their different last epochs; one trial that diverged at epoch 1 no longer pins
  the figure there. Below :data:`MIN_IMPORTANCE_TRIALS` such trials the importance is not drawn (a
  ranking of a handful of points says nothing) and a line says why. Baselines live in a study of
  their own and are not in these views; the figures state their sample size.
* ``parallel``: Optuna's parallel-coordinate plot of the same trials and values.
* ``by_family``: test score against epoch for every trial, coloured by family.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from .plots import pyplot, save_png


MIN_TRIALS = 3  # the equal-fidelity epoch is the deepest at least this many searched trials reached
MIN_IMPORTANCE_TRIALS = 10  # below this many trials at that epoch, no importance figure


def equal_fidelity_study(study, min_trials: int = MIN_TRIALS) -> tuple[Any, int | None]:  # noqa: ANN001
    """An in-memory study of the searched trials that did not fail, each COMPLETE with its value at
    the deepest epoch at least ``min_trials`` of them reached (all of them, when fewer); ``(study,
    epoch)``, epoch None when there is no such trial."""
    import optuna
    from optuna.trial import TrialState

    searched = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("role", "search") == "search"
                and t.intermediate_values and t.params and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    reached = sorted((max(t.intermediate_values) for t in searched), reverse=True)
    epoch = reached[min(min_trials, len(reached)) - 1] if reached else None
    out = optuna.create_study(direction="minimize")
    if epoch is None:
        return out, None
    for t in searched:
        value = t.intermediate_values.get(epoch)
        if value is not None and value == value:  # finite and reached
            out.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
    return out, epoch


def _png(ax) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    save_png(ax.figure if hasattr(ax, "figure") else ax.ravel()[0].figure, buf)
    return buf.getvalue()


def family_curves(df, ylabel: str) -> bytes:  # noqa: ANN001
    """Every trial's curve in ``df.attrs["curves"]``, coloured by its ``family`` column."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    family = dict(zip(df["trial"], df["family"])) if len(df) else {}
    colours = {f: f"C{i}" for i, f in enumerate(sorted(set(family.values())))}
    for trial, pts in df.attrs.get("curves", {}).items():
        if pts:
            epochs, scores = zip(*pts)
            ax.plot(epochs, scores, "-o", ms=3, color=colours.get(family.get(trial), "grey"), alpha=0.8)
    for f, c in colours.items():
        ax.plot([], [], color=c, label=f)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if colours:
        ax.legend()
    return _png(ax)


def study_figures(study, df, ylabel: str) -> dict[str, bytes]:  # noqa: ANN001
    """The three PNGs by kind (only those the study can support; a note says why one is missing)."""
    import optuna

    pyplot()  # Agg backend before Optuna's matplotlib views import pyplot
    out = {"by_family": family_curves(df, ylabel)}
    fair, epoch = equal_fidelity_study(study)
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the matplotlib views
    warnings.filterwarnings("ignore", module="optuna")  # few-trials warnings raised inside Optuna
    n = len(fair.trials)
    target = f"{ylabel} at epoch {epoch} ({n} searched trials)"
    if n >= 2 and len({k for t in fair.trials for k in t.params}) >= 1:
        out["parallel"] = _png(ovm.plot_parallel_coordinate(fair, target_name=target))
        if n < MIN_IMPORTANCE_TRIALS:
            print(f"note: no importance plot: {n} searched trials reached epoch {epoch}, fewer than "
                  f"{MIN_IMPORTANCE_TRIALS} (an importance ranked from so few trials says nothing)")
            return out
        try:
            out["importance"] = _png(ovm.plot_param_importances(fair, target_name=target))
        except (RuntimeError, ValueError) as err:  # e.g. every value equal, or one distinct configuration
            print(f"note: no importance plot ({err})")
    else:
        print("note: fewer than 2 searched trials with a shared epoch: no parallel-coordinate or importance plot")
    return out
