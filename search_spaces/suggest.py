"""One proposal of a space from an Optuna trial: a complete run config within the budget.

:func:`suggest` draws the free dimensions on the trial (skipping, when ``family`` is searched, the
fields the drawn family does not have), solves the width that meets the parameter budget (the
growth k of the dense layers, eq. 4-5, or a Residual Flow's hidden width; see
:mod:`search_spaces.solver`), and records on the trial the exact count, the relative deviation
δ = (P − B)/B, the solved width, and the constraint c = |δ| − tolerance (feasible when c ≤ 0; Optuna 5's
TPE, NSGA-II and GP samplers read it), all at ask time, before any training.

A trial enqueued for a :class:`~search_spaces.space.FixedTrial` carries it in its user attributes
(:func:`fixed_attrs`): a baseline draws nothing, an enqueued configuration draws what its fixed
parameters do not pin, and both take its model and train values over the draws.

Parameter names are flat and "/"-separated: ``model/<field>``, ``train/<key>``, and
``search/eta_init_k1`` / ``search/eta_init_k2`` for separately drawn concatenation initialisations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from model.config import model_config
from model.run_config import RunConfig

from .count import count_parameters
from .solver import width_field_of, with_width_values
from .space import FixedTrial, Space

CONSTRAINT_KEY = "param_budget"
FIXED_ATTR = "fixed_trial"


@dataclass(frozen=True)
class TrialRecord:
    """What travels with one trial from its proposal to ``best.yaml``: the run config, and the trial's
    role (control, baseline, enqueued, search), label, exact parameter count, the budget and the
    count's relative deviation from it, the solved width (field and value), the space's name, and the
    Optuna trial number (set when the searcher asks). As a dict (:meth:`to_dict`, Tune's trial config,
    stored with every trial): ``{"run": <RunConfig dict>, "trial": {<the rest>}}``."""

    run: RunConfig
    role: str = "search"
    label: str = ""
    param_count: int | None = None
    budget: int | None = None
    budget_deviation: float | None = None
    width_field: str | None = None
    width: int | None = None
    space: str = ""
    optuna_number: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.to_dict(), "trial": {f: getattr(self, f) for f in _INFO_FIELDS}}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "TrialRecord":
        """Inverse of :meth:`to_dict` (keys a newer version adds to ``trial`` are skipped)."""
        trial = config.get("trial") or {}
        return cls(RunConfig.from_dict(config["run"]), **{k: trial[k] for k in _INFO_FIELDS if k in trial})

    def with_train(self, **changes: Any) -> "TrialRecord":
        return dataclasses.replace(self, run=self.run.with_train(**changes))


_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.name != "run")


def fixed_attrs(fixed: FixedTrial) -> dict[str, Any]:
    """User attributes for ``study.enqueue_trial(fixed.params, user_attrs=...)``."""
    return {FIXED_ATTR: fixed.to_dict(), "role": fixed.role, "label": fixed.label}


def suggest(space: Space, trial: Any) -> TrialRecord:
    """The proposal of ``trial`` (an ``optuna.Trial``); see the module docstring."""
    fixed: Mapping[str, Any] = trial.user_attrs.get(FIXED_ATTR) or {}
    role = fixed.get("role", "search")
    model_set = dict(fixed.get("model") or {})
    assignment: dict[str, Any] = {}
    train: dict[str, Any] = {}
    if role in ("search", "enqueued"):
        family = model_set.get("family", space.base["family"])
        for dim in space.dimensions:
            if dim.name == "family":
                family = dim.suggest(trial)
                assignment["family"] = family
        for dim in space.dimensions:
            if dim.name == "family" or not dim.applies_to(model_set.get("family", family)):
                continue
            value = dim.suggest(trial)
            (assignment if dim.target == "model" else train)[dim.name] = value
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in model_set.items()}
    if given:  # a fixed trial's own choices may lie outside the file's combinations: solve for them
        values = {**space.base, **assignment, **given}
        if width_field_of(values) not in given:
            values = with_width_values(values, space.solve(values).width)
    else:
        values = space.model_values(assignment)
    cfg = model_config(**values)
    count = count_parameters(cfg)
    deviation = space.budget.deviation(count)
    fld = cfg.family_spec.width_field(cfg.is_toy)
    width = cfg.family_spec.width_of(cfg.arch, cfg.is_toy)
    trial.set_user_attr("param_count", count)
    trial.set_user_attr("budget_deviation", deviation)
    trial.set_user_attr("param_budget", space.budget.params)
    trial.set_user_attr(fld, width)
    if "role" not in trial.user_attrs:
        trial.set_user_attr("role", role)
    trial.set_constraint(CONSTRAINT_KEY, abs(deviation) - space.budget.tolerance)
    run = RunConfig(cfg, space.train_config({**train, **dict(fixed.get("train") or {})}))
    return TrialRecord(run, role=role, label=fixed.get("label", ""), param_count=count, budget=space.budget.params,
                       budget_deviation=deviation, width_field=fld, width=width, space=space.name)
