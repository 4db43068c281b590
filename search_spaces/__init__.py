"""Budget-matched search spaces: exact parameter counts, budgets, the growth solver, space files and
their Optuna define-by-run function. Imports ``model`` only for :class:`ModelConfig`; never builds a
model and never imports Optuna (the define-by-run function only calls the trial it is given)."""

from __future__ import annotations

from .budgets import BUDGETS, DEFAULT_TOLERANCE, REFERENCE_CONFIGS, Budget, UnknownBudget, make_budget, resolve_budget
from .count import COUNT_FIELDS, count_parameters
from .define_by_run import define_by_run, model_config_of, trial_config, unflatten
from .solver import BudgetError, Solution, growth_table, nearest_width, solve_growth, solved_config
from .space import Dimension, Space, SpaceError, load_space, shipped_spaces, space_from_dict

__all__ = [
    "BUDGETS", "DEFAULT_TOLERANCE", "REFERENCE_CONFIGS", "Budget", "UnknownBudget", "make_budget",
    "resolve_budget", "COUNT_FIELDS", "count_parameters", "define_by_run", "model_config_of",
    "trial_config", "unflatten", "BudgetError", "Solution", "growth_table", "nearest_width",
    "solve_growth", "solved_config", "Dimension", "Space", "SpaceError", "load_space",
    "shipped_spaces", "space_from_dict",
]
