"""Search spaces: YAML files that fix some model choices, search others, and hold every proposal
to a parameter budget by construction.

A space names a data set, a budget with a relative tolerance, fixed :class:`ModelConfig` values,
searched dimensions (:mod:`search_spaces.dimensions`), fixed training values, and the trials to run
first: **baselines** (the control arm: ``resflow``, the budget's own Residual Flow, whose count *is*
the budget; and any fixed config) and **enqueued** known configurations (warm starts). The width of
the dense layers (the growth k of eq. 4-5; the hidden width of a Residual Flow) is never searched:
it is solved from the budget for every combination of the choices that change the count.
:func:`load_space` checks every combination and every fixed trial up front, so a loaded space can
only propose configurations within tolerance.

File layout (the shipped ``*.yaml`` next to this module are examples)::

    name: cifar10-small            # optional, default: the file name
    description: ...               # optional
    dataset: cifar10               # sets input_shape (and n_levels for images)
    budget: cifar10-small          # a preset, a number, or a reference Residual Flow {hidden: 256, ...}
    tolerance: 0.015               # relative, default 0.015
    model: {family: idensenet, learnable_concat: true, ...}   # fixed ModelConfig values
    search:                        # a mapping searches a dimension, a plain value fixes it
      family: {choices: [idensenet, resflow]}          # Residual Flows get their width solved
      depth: {choices: [2, 3, 4, 5]}
      eta_init: {low: 0.5, high: 2.0, shared: true}   # initial K of the concatenation (§3.3)
      lr: {low: 1.0e-4, high: 3.0e-3, log: true}      # a training dimension
    train: {batch_size: 64, epochs: 100, lr: 1.0e-3}   # checked by model.train_config.TrainConfig
    schedule: {grace_period: 10, reduction_factor: 3}  # ASHA defaults for this space
    baselines:                     # run first, never stopped early, marked in the study and table
      - resflow
      - {label: paper-d3-g178, model: {depth: 3, growth: 178, activation: clipswish}}
    enqueue:                       # known configurations proposed first (they can be stopped)
      - {label: paper-d4, model: {depth: 4, growth: 122}}
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from model.config import SHARED_FIELDS, ConfigError, ModelConfig, flat_dict, model_config, toy_config
from model.families import arch_fields, budget_family, family_names, get_family
from model.datasets import DATASETS, TOY_SETS
from model.errors import UserError
from model.train_config import SEARCHABLE as TRAIN_SEARCHABLE
from model.train_config import TrainConfig
from model.values import as_number, coerce, field_kinds, is_whole, kind_of

from .budgets import BUDGETS, DEFAULT_TOLERANCE, Budget, UnknownBudget, make_budget
from .count import arch_from_values, count_fields, count_parameters, count_values, flat_values
from .dimensions import Dimension, parse_dimension, show
from .solver import Solution, solve_arch, width_field_of, with_width_values

TOP_KEYS = ("name", "description", "dataset", "budget", "tolerance", "model", "search", "train", "schedule",
            "baselines", "enqueue", "budgets", "follow_reference")
#: model fields a scaling study may copy from each budget's reference Residual Flow (``follow_reference:``)
FOLLOWABLE = ("blocks_per_scale", "fc_blocks")
MAX_COMBINATIONS = 5000


def model_field_kinds() -> dict[str, str]:
    """Kind of every model field a space may set: the shared ones and every registered family's."""
    shared = {k: v for k, v in field_kinds(ModelConfig).items() if k in SHARED_FIELDS}
    return {**shared, **{name: kind_of(f.type) for name, f in arch_fields().items()}}


def control_name() -> str:
    """The ``baselines`` entry that names the budget's own model: the budget family's name."""
    return budget_family().name


class SpaceError(UserError):
    """An invalid or infeasible search space: one problem per line, ``<source>: <key path>: <message>``."""

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass(frozen=True)
class FixedTrial:
    """A trial the sweep runs first: a baseline (``control``: the budget's Residual Flow, or
    ``baseline``) or an ``enqueued`` known configuration. ``model`` / ``train`` are the values it sets
    over the space's (the width is solved when ``model`` does not set it); ``params`` the Optuna
    parameters that reproduce its searched values (baselines have none: they are controls, not
    search points); ``count`` its exact parameter count."""

    role: str
    label: str
    model: Mapping[str, Any]
    train: Mapping[str, Any]
    params: Mapping[str, Any]
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "label": self.label, "model": dict(self.model), "train": dict(self.train),
                "params": dict(self.params), "count": self.count}


@dataclass(frozen=True, eq=False)
class Space:
    """A validated search space; every combination of its count-changing choices has a solved width
    within ``budget.tolerance`` (``solutions``), and so has every fixed trial."""

    name: str
    dataset: str
    budget: Budget
    base: Mapping[str, Any] = field(repr=False)  # every ModelConfig value but the searched ones
    fixed: Mapping[str, Any]  # the model values the file fixes (for display)
    train: Mapping[str, Any]
    dimensions: tuple[Dimension, ...]
    solutions: Mapping[tuple[Any, ...], Solution] = field(repr=False)
    description: str = ""
    source: str = "<dict>"
    schedule: Mapping[str, Any] = field(default_factory=dict)
    baselines: tuple[FixedTrial, ...] = ()
    enqueued: tuple[FixedTrial, ...] = ()

    @property
    def count_dimensions(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.counts)

    def combinations(self) -> list[dict[str, Any]]:
        """Every distinct assignment of the count-changing dimensions (a Residual Flow takes no
        i-DenseNet depth, so those repeat once per family only)."""
        dims = self.count_dimensions
        seen, out = set(), []
        for combo in itertools.product(*(d.values() for d in dims)):
            assignment = self._normalised(dict(zip((d.name for d in dims), combo)))
            key = tuple(repr(assignment[d.name]) for d in dims)
            if key not in seen:
                seen.add(key)
                out.append(assignment)
        return out

    def _normalised(self, assignment: Mapping[str, Any]) -> dict[str, Any]:
        """Count dimensions not drawn (absent, or not for this family) at their first value."""
        family = assignment.get("family", self.base["family"])
        return {d.name: assignment[d.name] if d.name in assignment and d.applies_to(family) else d.values()[0]
                for d in self.count_dimensions}

    def solution(self, assignment: Mapping[str, Any]) -> Solution:
        """The solved width for an assignment of (some of) the count-changing dimensions."""
        full = self._normalised(assignment)
        sol = self.solutions.get(tuple(full[d.name] for d in self.count_dimensions))
        if sol is None:  # not a combination of the file's choices: solve it now
            sol = _solve({**self.base, **{k: v for k, v in assignment.items() if k in self.base}}, self.budget)
        return sol

    def solve(self, values: Mapping[str, Any]) -> Solution:
        """The solved width for complete model values (any combination, in the file or not)."""
        return _solve(values, self.budget)

    def model_values(self, assignment: Mapping[str, Any]) -> dict[str, Any]:
        """Complete ModelConfig values for an assignment of model dimensions, width solved."""
        values = {**self.base, **{k: v for k, v in assignment.items() if k in self.base}}
        sol = self.solution(assignment)
        return with_width_values(values, sol.width)

    def model_config(self, assignment: Mapping[str, Any]) -> ModelConfig:
        return model_config(**self.model_values(assignment))

    def train_config(self, values: Mapping[str, Any] | None = None) -> TrainConfig:
        """The space's train values (and ``values`` over them) on its data set."""
        return TrainConfig.from_dict({**self.train, **dict(values or {}), "data": self.dataset})

    def table(self) -> list[dict[str, Any]]:
        """One row per combination: its choices, solved width, count and deviation."""
        rows = []
        for assignment in self.combinations():
            sol = self.solution(assignment)
            rows.append({**assignment, sol.field: sol.width, "count": sol.count,
                         "deviation": sol.deviation, "feasible": sol.feasible})
        return rows

    def describe(self) -> str:
        """A human-readable summary (name, data, budget, fixed values, dimensions, training, fixed trials)."""
        lines = [f"space {self.name}  ({self.source})"]
        if self.description:
            lines.append(f"  {self.description}")
        lines.append(f"  dataset: {self.dataset}")
        lines.append(f"  budget: {self.budget.describe()}")
        if self.fixed:
            lines.append("  fixed model values:")
            lines += [f"    {k}: {show(v)}" for k, v in self.fixed.items()]
        lines.append("  searched:")
        lines += [f"    {d.target}.{d.name}: {d.describe()}" for d in self.dimensions] or ["    (nothing)"]
        if self.train:
            lines.append("  train: " + ", ".join(f"{k}={v}" for k, v in self.train.items()))
        if self.schedule:
            lines.append("  schedule: " + ", ".join(f"{k}={v}" for k, v in self.schedule.items()))
        for f in (*self.baselines, *self.enqueued):
            lines.append(f"  {f.role}: {f.label}, {f.count:,} parameters "
                         f"({100 * self.budget.deviation(f.count):+.2f}%)")
        return "\n".join(lines)


def _solve(values: Mapping[str, Any], budget: Budget) -> Solution:
    return solve_arch(arch_from_values(values), budget.params, budget.tolerance)


def _config_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    try:
        model_config(**values)
    except ConfigError as e:
        return e.problems
    return []


def _messages_about(problems: Iterable[tuple[str, str]], key: str) -> list[str]:
    return [m for w, m in problems if w == key]


def _combo_text(assignment: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in assignment.items())


class _Collector:
    """Problems in file order, one each: ``(<source>: <key path>, <message>)``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[tuple[str, str]] = []

    def __call__(self, path: str, message: str) -> None:
        item = (f"{self.source}: {path}", message)
        if item not in self.problems:
            self.problems.append(item)


def _section(data: Mapping[str, Any], key: str, kind: type, err: Any) -> Any:
    raw = data.get(key)
    if raw is None:
        return kind()
    if not isinstance(raw, kind):
        err(key, f"must be a {'mapping' if kind is dict else 'list'}")
        return kind()
    return raw


def space_from_dict(data: Any, source: str = "<dict>", default_name: str = "space") -> Space:
    """Validate a parsed space file; raises :class:`SpaceError` listing every problem.

    Three passes (:class:`_SpaceReader`): types and structure; each fixed value and each searched
    choice/bound against the model config's own rules (and the train values against
    :class:`TrainConfig`); then every combination of count-changing choices and every fixed trial (a
    valid config, and a width within tolerance of the budget).
    """
    if not isinstance(data, Mapping):
        raise SpaceError([(f"{source}: (top level)", f"must be a mapping of {', '.join(TOP_KEYS)}")])
    reader = _SpaceReader(data, source)
    name, description = reader.header(default_name)
    reader.dataset_and_budget()
    reader.defaults()
    fixed, train, dims = reader.types()  # pass 1
    schedule = _schedule(data.get("schedule"), reader.err)
    good_dims = reader.against_rules(fixed, dims)  # pass 2
    solutions: dict[tuple[Any, ...], Solution] = {}
    if reader.count_ok and reader.budget is not None:  # pass 3
        _check_combinations(reader.base, good_dims, reader.budget, reader.err, solutions)
    err, space = reader.err, None
    if not err.problems:
        assert reader.budget is not None
        space = Space(
            name=name, dataset=reader.dataset, budget=reader.budget, base=reader.proposal_base(),
            fixed={k: v for k, (v, _) in fixed.items()}, train=train, dimensions=tuple(dims),
            solutions=solutions, description=description, source=source, schedule=schedule,
        )
        baselines = tuple(_fixed_entries(space, data.get("baselines"), "baselines", err))
        enqueued = tuple(_fixed_entries(space, data.get("enqueue"), "enqueue", err))
        space = dataclasses.replace(space, baselines=baselines, enqueued=enqueued)
    if err.problems:
        raise SpaceError(err.problems)
    return space


class _SpaceReader:
    """The state :func:`space_from_dict` builds up pass by pass; every problem goes to ``err`` and
    ``count_ok`` turns False when a count-changing value is unusable (pass 3 then does not run)."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data, self.err, self.count_ok = data, _Collector(source), True
        self.dataset, self.info, self.budget = "", None, None
        self.kinds, self.counting = model_field_kinds(), count_fields()
        for key in data:
            if key not in TOP_KEYS:
                self.err(str(key), f"unknown key; valid keys: {', '.join(TOP_KEYS)}")
        self.model_raw, self.search_raw, self.train_raw = (
            _section(data, k, dict, self.err) for k in ("model", "search", "train"))

    def header(self, default_name: str) -> tuple[str, str]:
        """The space's name and description; the shape of ``budgets:`` and ``follow_reference:``."""
        data, err = self.data, self.err
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            err("name", f"{name!r} is not a non-empty string")
            name = default_name
        budgets = data.get("budgets")  # `idensenet scaling`'s list; a sweep of the file runs at `budget:`
        if budgets is not None and not (isinstance(budgets, list) and budgets):
            err("budgets", "must be a non-empty list of parameter counts, preset names or reference configs")
        follow = data.get("follow_reference", [])
        if not (isinstance(follow, list) and all(f in FOLLOWABLE for f in follow)):
            err("follow_reference", f"must be a list of model fields among {', '.join(FOLLOWABLE)}")
        description = data.get("description", "")
        if not isinstance(description, str):
            err("description", "must be a string")
            description = ""
        return name, description

    def dataset_and_budget(self) -> None:
        data, err = self.data, self.err
        dataset = data.get("dataset")
        if dataset is None:
            err("dataset", f"missing; one of {', '.join(DATASETS)}")
            self.count_ok = False
        elif not isinstance(dataset, str) or dataset.lower() not in DATASETS:
            err("dataset", f"{dataset!r} is not one of {', '.join(DATASETS)}")
            self.count_ok = False
        self.dataset = dataset.lower() if isinstance(dataset, str) else ""
        self.info = DATASETS.get(self.dataset)
        tolerance = data.get("tolerance", DEFAULT_TOLERANCE)
        tol = as_number(tolerance)
        if tol is None or not 0 < tol < 1:
            err("tolerance", f"{tolerance!r} must be a relative tolerance in (0, 1), e.g. 0.015")
            tol = DEFAULT_TOLERANCE
        if "budget" not in data:
            err("budget", f"missing; a preset ({', '.join(BUDGETS)}), a reference config or a number of parameters")
            return
        try:
            self.budget = make_budget(data["budget"], tol, self.dataset if self.info else None)
        except UnknownBudget as e:
            err("budget", e.summary())

    def defaults(self) -> None:
        """``base``: the authors' toy or image model with the data set's shape (every family's fields,
        flat), the budget's reference layout for its own family; ``solved``: the width fields of the
        families the space can propose."""
        self.toy = self.dataset in TOY_SETS
        base: dict[str, Any] = flat_values(toy_config() if self.toy else ModelConfig())
        if self.info is not None:
            base["input_shape"] = self.info.shape
            if self.info.n_levels is not None:
                base["n_levels"] = self.info.n_levels
        if self.budget is not None and self.budget.reference is not None:  # its family's searched models take its layout
            ref = self.budget.reference
            base.update({f: getattr(ref.arch, f) for f in ref.family_spec.fields()})
        spec = self.search_raw.get("family", self.model_raw.get("family", base["family"]))
        values = spec.get("choices") if isinstance(spec, Mapping) else [spec]
        self.families = [f for f in values if f in family_names()] if isinstance(values, list) else []
        self.families = self.families or [base["family"]]
        self.solved = {width_field_of(base, f) for f in self.families}
        self.base = base

    def _fix(self, key: str, kind: str, value: Any, path: str, fixed: dict[str, tuple[Any, str]]) -> None:
        v, problem = coerce(kind, value)
        if problem:
            self.err(path, problem)
            self.count_ok = self.count_ok and key not in self.counting
        else:
            fixed[key] = (v, path)

    def types(self) -> tuple[dict[str, tuple[Any, str]], dict[str, Any], list[Dimension]]:
        """Pass 1, structure and types: (fixed model values with their key paths, train values as
        :class:`TrainConfig` reads them, searched dimensions)."""
        err, kinds = self.err, self.kinds
        fixed: dict[str, tuple[Any, str]] = {}  # field -> (value, key path)
        for key, value in self.model_raw.items():
            path = f"model.{key}"
            if key not in kinds:
                err(path, "unknown model config field")
            elif key in self.solved and not coerce(kinds[key], value)[1]:
                err(path, f"{key} is solved from the budget; remove it")
            else:
                self._fix(key, kinds[key], value, path, fixed)
        train = {str(k): v for k, v in self.train_raw.items()}
        train_paths = {str(k): f"train.{k}" for k in self.train_raw}
        dims: list[Dimension] = []
        for key, spec in self.search_raw.items():
            path = f"search.{key}"
            if key in TRAIN_SEARCHABLE:
                target, kind = "train", TRAIN_SEARCHABLE[key]
            elif key in kinds:
                target, kind = "model", kinds[key]
            else:
                err(path, f"unknown dimension; a model config field or one of {', '.join(TRAIN_SEARCHABLE)}")
                continue
            if target == "model" and key in self.solved:
                err(path, f"{key} is solved from the budget; it cannot be searched")
            elif target == "model" and key in self.model_raw:
                err(path, f"also fixed under model.{key}; give it once")
            elif not isinstance(spec, Mapping):  # a plain value fixes it
                if target == "train":
                    train[key], train_paths[key] = spec, path
                else:
                    self._fix(key, kind, spec, path, fixed)
            elif key == "input_shape":
                err(path, "input_shape is fixed by the dataset")
            else:
                self._dimension(key, kind, target, spec, path, dims)
        train = _checked_train(train, train_paths, self.dataset if self.info else "moons", err)
        return fixed, train, dims

    def _dimension(self, key: str, kind: str, target: str, spec: Mapping[str, Any], path: str,
                   dims: list[Dimension]) -> None:
        dim = parse_dimension(key, kind, target, spec, path, self.err)
        if dim is None:
            self.count_ok = self.count_ok and key not in self.counting
        elif dim.counts and dim.kind not in ("categorical", "int"):
            self.err(path, f"{key} changes the parameter count; give 'choices' or an integer range")
            self.count_ok = False
        elif target == "train" and key == "lr" and dim.low <= 0:
            self.err(path, "the learning rate must be > 0")
        else:
            dims.append(dim)

    def against_rules(self, fixed: Mapping[str, tuple[Any, str]], dims: list[Dimension]) -> list[Dimension]:
        """Pass 2: each fixed value and each searched value against the config's rules. Returns the
        dimensions pass 3 combines: count-changing ones keep only their valid values, the others
        one valid representative."""
        err, info = self.err, self.info
        self.defaults_of_solved = {s: self.base[s] for s in self.solved}
        for f in self.families:  # a placeholder valid for every activation until the width is solved
            self.base = with_width_values(self.base, 2, f)
        model_dims = [d for d in dims if d.target == "model"]
        reference = {**self.base, **{k: v for k, (v, _) in fixed.items()},
                     **{d.name: d.representatives()[0] for d in model_dims}}
        for key, (value, path) in fixed.items():
            if key == "input_shape" and info is not None and value != info.shape:
                err(path, f"{list(value)} does not match dataset {self.dataset} {list(info.shape)}")
            elif key == "n_levels" and not self.toy and info is not None and value != info.n_levels:
                err(path, f"{value} does not match dataset {self.dataset} ({info.n_levels} levels)")
            else:
                found = self._problems_of(reference, key, value)
                for text in found:
                    err(path, text)
                if not found:
                    self.base[key] = value
                    continue
            self.count_ok = self.count_ok and key not in self.counting
        good: list[Dimension] = []
        for d in dims:
            if d.target == "train":
                good.append(d)
                continue
            valid = []
            for v in (d.values() if d.counts else d.representatives()):
                found = self._problems_of(reference, d.name, v)
                for text in found:
                    err(f"search.{d.name}", text)
                if not found:
                    valid.append(v)
            if valid:  # a non-counting dimension: pass 3 sets it to one valid value
                good.append(dataclasses.replace(d, kind="categorical", choices=tuple(valid) if d.counts else (valid[0],)))
            elif d.counts:
                self.count_ok = False
        return good

    def _problems_of(self, reference: Mapping[str, Any], key: str, value: Any) -> list[str]:
        """What the config rules say about ``key = value``, checked for every family the space can
        propose that has the field (a searched family may change which rules apply)."""
        found: list[str] = []
        for family in self.families:
            if key in SHARED_FIELDS or key in get_family(family).fields():
                values = {**reference, key: value} if key == "family" else {**reference, "family": family, key: value}
                found += [m for m in _messages_about(_config_problems(values), key) if m not in found]
        return found

    def proposal_base(self) -> dict[str, Any]:
        """The space's base values: a proposal's own width is solved, another family's keeps its default."""
        return {**self.base, **self.defaults_of_solved}


def _checked_train(train: dict[str, Any], paths: Mapping[str, str], dataset: str, err: Any) -> dict[str, Any]:
    """The train values as :class:`TrainConfig` reads them (numbers written as text converted);
    every problem under its key path."""
    if "data" in train:
        err(paths["data"], "the data set is the space's 'dataset'")
        train = {k: v for k, v in train.items() if k != "data"}
    try:
        checked = TrainConfig.from_dict({**train, "data": dataset}).to_dict()
    except ConfigError as e:
        for w, m in e.problems:
            err(paths.get(w, f"train.{w}"), m)
        return {}
    return {k: tuple(checked[k]) if isinstance(checked[k], list) else checked[k] for k in train}


def _schedule(raw: Any, err: Any) -> dict[str, Any]:
    """``schedule: {grace_period: g >= 1, reduction_factor: η > 1}`` (ASHA's defaults for this space)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        err("schedule", "must be a mapping of grace_period, reduction_factor")
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "grace_period" and is_whole(value) and value >= 1:
            out[key] = value
        elif key == "reduction_factor" and as_number(value) is not None and as_number(value) > 1:
            out[key] = as_number(value)
        elif key in ("grace_period", "reduction_factor"):
            err(f"schedule.{key}", f"{value!r} must be {'a whole number >= 1' if key == 'grace_period' else '> 1'}")
        else:
            err(f"schedule.{key}", "unknown key; valid keys: grace_period, reduction_factor")
    return out


def _check_combinations(
    base: dict[str, Any],
    dims: list[Dimension],
    budget: Budget,
    err: Any,
    solutions: dict[tuple[Any, ...], Solution],
) -> None:
    """Every combination of count-changing choices must give a valid config whose solved width is
    within tolerance of the budget; fills ``solutions`` (combination values -> solution)."""
    count_dims = [d for d in dims if d.counts]
    rep = {d.name: d.representatives()[0] for d in dims if d.target == "model" and not d.counts}
    dim_names = {d.name for d in dims}
    n = 1
    for d in count_dims:
        n *= len(d.values() or [])
    if n > MAX_COMBINATIONS:
        err("search", f"{n} combinations of count-changing choices; at most {MAX_COMBINATIONS}")
        return

    for combo in itertools.product(*(d.values() for d in count_dims)):
        assignment = dict(zip((d.name for d in count_dims), combo))
        family = assignment.get("family", base["family"])
        shown = {k: v for k, v in assignment.items() if next(d for d in count_dims if d.name == k).applies_to(family)}
        context = _combo_text(shown)
        where = "search" if assignment else "model"
        values = {**base, **rep, **assignment}
        found = _config_problems(values)
        if found:  # a combination the config rules reject (e.g. odd fc_growth with CLipSwish)
            for key, msg in found:
                path = f"search.{key}" if key in dim_names else f"model.{key}"
                err(path, f"{key}: {msg} (with {context})" if context else f"{key}: {msg}")
            continue
        sol = _solve(values, budget)
        solutions[combo] = sol
        prefix = f"{context}: " if context else ""
        if not sol.feasible:
            err(where, f"{prefix}no {sol.field} within ±{100 * budget.tolerance:g}% of {budget.params:,}; "
                       f"nearest {sol.nearest_text()}")
            continue
        for key, msg in _config_problems(with_width_values(values, sol.width)):
            err(where, f"{prefix}{key}: {msg}")


# ------------------------------------------------------------------------------- fixed trials
def fixed_trial(space: Space, role: str, label: str, model: Mapping[str, Any], train: Mapping[str, Any],
                where: str = "") -> FixedTrial:
    """A :class:`FixedTrial` of ``space``: ``model`` over the space's fixed values (width solved when
    not given), within the budget's tolerance; ``params`` for an enqueued trial's searched values."""
    where = where or label
    model = flat_dict(model)  # a model config as best.yaml writes it (arch nested) reads as flat fields
    unknown = sorted(set(model) - set(model_field_kinds()))
    if unknown:
        raise SpaceError([(where, f"unknown model config field(s) {', '.join(unknown)}")])
    bad_train = sorted(set(train) - set(TRAIN_SEARCHABLE))
    if bad_train:
        raise SpaceError([(where, f"train values other than {', '.join(TRAIN_SEARCHABLE)} cannot differ "
                                  f"between trials ({', '.join(bad_train)})")])
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in model.items()}
    values = {**space.base, **given}
    fld = width_field_of(values)
    if fld not in given:
        values = with_width_values(values, _solve(values, space.budget).width)
    try:
        cfg = model_config(**values)
    except ConfigError as e:
        raise SpaceError([(where, line) for line in e.lines()]) from None
    count = count_parameters(cfg)
    if not space.budget.fits(count):
        raise SpaceError([(where, f"{count:,} parameters are {100 * space.budget.deviation(count):+.2f}% off the "
                                  f"budget {space.budget.describe()}")])
    if role != "enqueued":  # nothing of a baseline is drawn: keep its width as solved here
        given[fld] = values[fld]
    params: dict[str, Any] = {}
    if role == "enqueued":  # its family, and whatever else it sets, is fixed for the sampler too
        for d in space.dimensions:
            source = given if d.target == "model" else train
            if d.name == "family":
                params.update(d.params_for(cfg.family))
            elif d.name in source and d.applies_to(cfg.family):
                params.update(d.params_for(source[d.name]))
    return FixedTrial(role, label, {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()},
                      dict(train), params, count)


def control_trial(space: Space) -> FixedTrial:
    """The budget's own Residual Flow with the space's recipe: the reference config's count-changing
    fields over the space's other values (exactly the budget's count), or, for a bare number, a
    LipSwish Residual Flow of the space's shape with its width solved."""
    ref = space.budget.reference
    if ref is not None:
        model = count_values(ref)
    else:
        model = {"family": control_name(), "activation": "lipswish"}
    return fixed_trial(space, "control", control_name(), model, {}, f"baselines: {control_name()}")


def _fixed_entries(space: Space, raw: Any, key: str, err: Any) -> list[FixedTrial]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        err(key, "must be a list")
        return []
    out = []
    for i, entry in enumerate(raw):
        path = f"{key}[{i}]"
        try:
            if key == "baselines" and entry == control_name():
                out.append(control_trial(space))
                continue
            if not isinstance(entry, Mapping) or set(entry) - {"label", "model", "train"} or not isinstance(
                    entry.get("model", {}), Mapping) or not isinstance(entry.get("train", {}), Mapping):
                err(path, f"must be {control_name()!r} or a mapping of label, model, train" if key == "baselines"
                          else "must be a mapping of label, model, train")
                continue
            role = "baseline" if key == "baselines" else "enqueued"
            out.append(fixed_trial(space, role, str(entry.get("label", f"{key}-{i + 1}")),
                                   entry.get("model") or {}, entry.get("train") or {}, ""))
        except SpaceError as e:
            for _, m in e.problems:
                err(path, m)
    labels = [f.label for f in out]
    for dup in sorted({x for x in labels if labels.count(x) > 1}):
        err(key, f"label {dup!r} is used twice")
    return out


def fixed_trials_from_file(space: Space, path: str) -> list[FixedTrial]:
    """Enqueued trials from a ``best.yaml`` (each entry's run config), or from a YAML list of
    ``{label, model, train}`` (a ``--enqueue FILE``); every one within the space's budget."""
    p = Path(path)
    if not p.is_file():
        raise UserError([("--enqueue", f"no such file {path}")])
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError([("--enqueue", f"{path} is not valid YAML ({getattr(e, 'problem', e)})")]) from None
    if isinstance(doc, Mapping) and "configs" in doc:  # a best.yaml
        entries = [{"label": f"{doc.get('space', 'best')}#{e.get('rank')}", "model": flat_dict((e.get("run") or {}).get("model", {})),
                    "train": {k: v for k, v in ((e.get("run") or {}).get("train") or {}).items() if k in TRAIN_SEARCHABLE}}
                   for e in doc["configs"] or []]
    elif isinstance(doc, list):
        entries = doc
    else:
        raise UserError([("--enqueue", f"{path}: expected a best.yaml or a list of {{label, model, train}}")])
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("model", {}), Mapping):
            raise UserError([("--enqueue", f"{path}: entry {i + 1} is not a mapping with 'model'")])
        model = {k: v for k, v in (entry.get("model") or {}).items() if k != "input_shape" and k != "n_levels"}
        try:
            out.append(fixed_trial(space, "enqueued", str(entry.get("label", f"enqueued-{i + 1}")), model,
                                   entry.get("train") or {}, f"--enqueue {path}: entry {i + 1}"))
        except SpaceError as e:
            raise UserError(e.problems) from None
    return out


# ---------------------------------------------------------------------------------- loading
def shipped_spaces() -> list[str]:
    """Names of the space files shipped with this package."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml"))


def load_space(path_or_name: str | Path) -> Space:
    """Load and validate a space from a YAML file, or a shipped space by name (``cifar10-small``).

    Raises :class:`SpaceError`, one line per problem, each with its key path.
    """
    text = str(path_or_name)
    p = Path(text)
    if p.is_file():
        source, default_name = str(p), p.stem
        raw = p.read_text(encoding="utf-8")
    else:
        name = text[:-5] if text.endswith(".yaml") else text
        res = resources.files(__package__) / f"{name}.yaml"
        if "/" in name or not res.is_file():
            raise SpaceError([(text, f"no such file, nor a shipped space ({', '.join(shipped_spaces())})")])
        source, default_name = f"{name}.yaml", name
        raw = res.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise SpaceError([(f"{source}: {where}", f"YAML syntax error: {getattr(e, 'problem', None) or e}")]) from None
    return space_from_dict(data, source=source, default_name=default_name)
