"""Adapter to the search spaces of :mod:`search_spaces` and the picklable define-by-run callable.

OptunaSearch calls the define-by-run function with a wrapper around ``optuna.Trial``; the function
returns ``{"model": ModelConfig dict, "train": {...}, "param_count", "budget_deviation"}`` (the growth
is solved from the parameter budget, so every proposal is within the budget's tolerance). Tune pickles
the searcher with the experiment, so the callable keeps only the space reference and reloads the
space after unpickling.
"""

from __future__ import annotations

from typing import Any, Iterable

from .errors import UserError


def load_space(ref: str):
    """The :class:`search_spaces.space.Space` for a file path or a preset name; bad input → UserError."""
    try:
        from search_spaces.space import load_space as _load
    except ImportError as err:  # pragma: no cover - the package ships with the project
        raise UserError(f"search spaces are unavailable ({err})") from None
    try:
        return _load(ref)
    except UserError:
        raise
    except (LookupError, ValueError, OSError, TypeError) as err:
        problems = list(getattr(err, "problems", None) or [str(err.args[0]) if err.args else str(err)])
        more = f" (+{len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UserError(f"search space {ref!r}: {problems[0]}{more}") from None


IGNORED_TRAIN_KEYS = ("n_workers",)  # the worker count comes from --workers-per-trial


def clean_train(train: dict[str, Any] | None) -> dict[str, Any]:
    """A space's train values restricted to :class:`TrainConfig` fields and converted to their types
    (an unknown key or a value of the wrong kind → UserError)."""
    from .train_config import TrainConfig

    out = {k: v for k, v in dict(train or {}).items() if k not in IGNORED_TRAIN_KEYS}
    checked = TrainConfig.from_dict(out).to_dict()
    return {k: checked[k] for k in out}


def space_train_defaults(space) -> dict[str, Any]:
    """Train settings a space carries (epochs, batch size, lr, ...), as a plain dict."""
    return clean_train(dict(getattr(space, "train", None) or {}))


def space_data(space) -> str | None:
    for attr in ("dataset", "data"):
        data = getattr(space, attr, None)
        if isinstance(data, str):
            return data
    return None


class SpaceSampler:
    """Picklable define-by-run function: ``space.define_by_run(trial)`` plus test knobs.

    ``inject_nan_trials`` lists Optuna trial numbers whose loss is forced to NaN from epoch 1 (used by
    the tests to check that a diverging trial ends as ``diverged`` without stopping the sweep).
    """

    def __init__(self, ref: str, inject_nan_trials: Iterable[int] = ()) -> None:
        self.ref = ref
        self.inject_nan_trials = tuple(int(n) for n in inject_nan_trials)
        self._space = None

    def __getstate__(self) -> dict[str, Any]:
        return {"ref": self.ref, "inject_nan_trials": self.inject_nan_trials, "_space": None}

    def space(self):
        if self._space is None:
            self._space = load_space(self.ref)
        return self._space

    def __call__(self, trial) -> dict[str, Any]:
        out = dict(self.space().define_by_run(trial))
        if trial.number in self.inject_nan_trials:
            if isinstance(out.get("train"), dict):
                out["train"] = {**out["train"], "inject_nan_at_epoch": 1}
            else:  # flat "train/<key>" values, un-flattened by OptunaSearch
                out["train/inject_nan_at_epoch"] = 1
        return out
