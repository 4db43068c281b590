"""``idensenet results NAME --plots``: Optuna's views of a sweep's study, as PNGs beside the experiment.

* ``importance.png``: importance of each searched dimension (Optuna's default importance evaluator)
  at **equal fidelity**: every searched trial is scored by its value at the same epoch, the deepest epoch that
  every trial reached (with ASHA: the grace period), so a trial stopped early is compared with a
  finished one on the epoch both trained, never on their different last epochs. Baselines and
  enqueued trials draw no parameters and are left out.
* ``parallel.png``: Optuna's parallel-coordinate plot of the same trials and values.
* ``scores_by_family.png``: test score against epoch for every trial, coloured by family.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from .settings import SweepSettings
from .storage import Location

IMPORTANCE_PNG, PARALLEL_PNG, FAMILY_PNG = "importance.png", "parallel.png", "scores_by_family.png"


def equal_fidelity_study(study) -> tuple[Any, int | None]:  # noqa: ANN001
    """An in-memory study of the searched trials, each COMPLETE with its value at the deepest epoch
    all of them reached; ``(study, epoch)``, epoch None when no epoch is shared."""
    import optuna

    searched = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("role", "search") == "search"
                and t.intermediate_values and t.params]
    epoch = min((max(t.intermediate_values) for t in searched), default=None)
    out = optuna.create_study(direction="minimize")
    if epoch is None:
        return out, None
    for t in searched:
        value = t.intermediate_values.get(epoch)
        if value is not None and value == value:  # finite and reached
            out.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
    return out, epoch


def _save(ax, exp: Location, name: str) -> str:
    fig = ax.figure if hasattr(ax, "figure") else ax.ravel()[0].figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    out = exp.join(name)
    out.write_bytes(buf.getvalue())
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out.uri


def family_curves(df, exp: Location, ylabel: str) -> str:
    from .plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    family = dict(zip(df["trial"], df["family"]))
    colours = {f: f"C{i}" for i, f in enumerate(sorted(set(family.values())))}
    for trial, pts in df.attrs.get("curves", {}).items():
        if pts:
            epochs, scores = zip(*pts)
            ax.plot(epochs, scores, "-o", ms=3, color=colours.get(family.get(trial), "grey"), alpha=0.8)
    for f, c in colours.items():
        ax.plot([], [], color=c, label=f)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    return _save(ax, exp, FAMILY_PNG)


def write_study_plots(exp: Location, df) -> dict[str, str]:
    """The three PNGs (only those the study can support); their URIs by kind."""
    import optuna

    from .plots import _plt
    from .search import open_study

    _plt()  # Agg backend before Optuna's matplotlib views import pyplot
    settings = SweepSettings.load(exp)
    ylabel = "test NLL (nats)" if settings.is_toy else "test bits/dim"
    out = {"by_family": family_curves(df, exp, ylabel)}
    fair, epoch = equal_fidelity_study(open_study(settings, fetch=True))
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", module="optuna")  # experimental-API and few-trials warnings
    if len(fair.trials) >= 2 and len({k for t in fair.trials for k in t.params}) >= 1:
        ax = ovm.plot_parallel_coordinate(fair, target_name=f"{ylabel} at epoch {epoch}")
        out["parallel"] = _save(ax, exp, PARALLEL_PNG)
        try:
            ax = ovm.plot_param_importances(fair, target_name=f"{ylabel} at epoch {epoch}")
            out["importance"] = _save(ax, exp, IMPORTANCE_PNG)
        except (RuntimeError, ValueError) as err:  # e.g. every value equal, or one distinct configuration
            print(f"note: no importance plot ({err})")
    else:
        print("note: fewer than 2 searched trials with a shared epoch: no parallel-coordinate or importance plot")
    return out
