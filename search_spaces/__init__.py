"""Budget-matched search spaces: exact parameter counts, budgets, the width solver, space files and
the proposal of one run config from an Optuna trial. Imports ``model`` for its config types only;
never builds a model, and never imports Optuna (a proposal only calls the trial it is given)."""

from __future__ import annotations

from .budgets import BUDGETS, DEFAULT_TOLERANCE, REFERENCE_CONFIGS, Budget, UnknownBudget, make_budget
from .count import count_fields, count_parameters
from .solver import BudgetError, Solution, growth_table, nearest_width, solve_growth, solved_config
from .space import FixedTrial, Space, SpaceError, control_trial, fixed_trials_from_file, load_space, shipped_spaces, space_from_dict
from .suggest import TrialRecord, fixed_attrs, suggest

__all__ = [
    "BUDGETS", "DEFAULT_TOLERANCE", "REFERENCE_CONFIGS", "Budget", "UnknownBudget", "make_budget",
    "count_fields", "count_parameters", "BudgetError", "Solution", "growth_table", "nearest_width",
    "solve_growth", "solved_config", "FixedTrial", "Space", "SpaceError", "control_trial",
    "fixed_trials_from_file", "load_space", "shipped_spaces", "space_from_dict", "TrialRecord", "fixed_attrs",
    "suggest",
]
