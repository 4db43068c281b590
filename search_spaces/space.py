"""Search spaces: YAML files that fix some model choices, search others, and hold every proposal
to a parameter budget by construction.

A space names a data set, a budget (preset or number) with a relative tolerance, fixed
:class:`ModelConfig` values, searched dimensions and fixed training values. The width of the dense
layers (the growth k of eq. 4-5; the hidden width for a Residual Flow) is never searched: it is
solved from the budget for every combination of the choices that change the count (depth,
activation, blocks per scale, ...). :func:`load_space` checks every such combination up front, so a
loaded space can only propose configurations within tolerance.

File layout (see the shipped ``*.yaml`` next to this module)::

    name: cifar10-small            # optional, default: the file name
    description: ...               # optional
    dataset: cifar10               # sets input_shape (and n_levels for images)
    budget: cifar10-small          # preset name or a number of parameters
    tolerance: 0.015               # relative, default 0.015
    model: {family: idensenet, learnable_concat: true, ...}   # fixed ModelConfig values
    search:                        # a mapping searches a dimension, a plain value fixes it
      depth: {choices: [2, 3, 4, 5]}
      activation: {choices: [clipswish, lipswish]}
      blocks_per_scale: {choices: [[4, 4, 4], [2, 4, 6]]}
      eta_init: {low: 0.5, high: 2.0, shared: true}   # initial K of the concatenation (§3.3)
      sn_coeff: 0.98
      lip_coeff: {low: 0.9, high: 0.99}
      lc_start_epoch: {low: 0, high: 25}
      lr: {low: 1.0e-4, high: 3.0e-3, log: true}      # a training dimension
    train: {batch_size: 64, epochs: 100, lr: 1.0e-3}
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from model.config import FAMILIES, ConfigError, ModelConfig, toy_config

from .budgets import BUDGETS, DEFAULT_TOLERANCE, Budget, UnknownBudget, make_budget
from .count import COUNT_FIELDS, Arch
from .solver import Solution, solve_arch, width_field

#: data set -> (input_shape, n_levels); mirrors model.data.dataset_info without importing torch
TOY_SETS: tuple[str, ...] = ("moons", "circles", "checkerboard", "8gaussians", "pinwheel", "2spirals")
DATASETS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "digits": ((1, 8, 8), 17),
    "cifar10": ((3, 32, 32), 256),
    "imagenet32": ((3, 32, 32), 256),
    **{name: ((2,), None) for name in TOY_SETS},
}

TOP_KEYS = ("name", "description", "dataset", "budget", "tolerance", "model", "search", "train")
#: training values that may be searched, with their kind
TRAIN_SEARCHABLE: dict[str, str] = {"lr": "float", "weight_decay": "float", "batch_size": "int"}
#: training values whose type is checked (other keys under ``train:`` pass through as scalars)
TRAIN_KINDS: dict[str, str] = {
    **TRAIN_SEARCHABLE, "epochs": "int", "warmup_iters": "int", "grad_clip": "float", "ema_decay": "float",
    "seed": "int", "n_workers": "int",
}
MAX_COMBINATIONS = 5000

_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(ModelConfig)}
_RANGE_KEYS = {"low", "high", "log", "step"}


class SpaceError(ValueError):
    """An invalid or infeasible search space; ``problems`` holds one line per problem, each with its
    key path, and the message is those lines joined."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------------------------- values
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_float(v: Any) -> float | None:
    """A number (YAML reads ``1e-3`` as a string, so numeric strings count too), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _normalise(kind: str, value: Any) -> tuple[Any, str | None]:
    """(value in canonical form, problem or None) for a value of type ``kind`` (a ModelConfig
    annotation string, or "float"/"int" for training values)."""
    if kind == "str":
        return (value, None) if isinstance(value, str) else (None, f"{value!r} is not a string")
    if kind == "int":
        return (value, None) if _is_int(value) else (None, f"{value!r} is not an integer")
    if kind == "int | None":
        return (value, None) if value is None or _is_int(value) else (None, f"{value!r} is not an integer or null")
    if kind == "float":
        f = _as_float(value)
        return (f, None) if f is not None else (None, f"{value!r} is not a number")
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, f"{value!r} is not true/false")
    if kind == "tuple[int, ...]":
        if isinstance(value, (list, tuple)) and value and all(_is_int(v) for v in value):
            return tuple(value), None
        return None, f"{value!r} is not a non-empty list of integers"
    if kind == "tuple[float, float]":
        f = _as_float(value)
        if f is not None:
            return (f, f), None
        if isinstance(value, (list, tuple)) and len(value) == 2:
            pair = [_as_float(v) for v in value]
            if all(p is not None for p in pair):
                return (pair[0], pair[1]), None
        return None, f"{value!r} is not a number or a pair of numbers"
    return value, None


def _encode(value: Any) -> Any:
    """An Optuna categorical choice for ``value`` (Optuna takes None/bool/int/float/str only)."""
    if isinstance(value, tuple):
        if all(_is_int(v) for v in value):
            return "-".join(str(v) for v in value)
        return json.dumps(list(value))
    return value


def _show(value: Any) -> str:
    enc = _encode(value)
    return enc if isinstance(enc, str) else json.dumps(enc)


# ---------------------------------------------------------------------------------- dimensions
@dataclass(frozen=True)
class Dimension:
    """One searched value: a model field or a training value.

    ``kind`` is "categorical" (``choices``), "int" or "float" (``low``..``high``, optional ``log``
    and ``step``) or "eta" (the initial K₁, K₂ of the learnable concatenation, paper §3.3: one
    shared value or one per η, each in ``low``..``high``).
    """

    name: str
    target: str  # "model" or "train"
    kind: str
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    shared: bool = True

    @property
    def param_names(self) -> tuple[str, ...]:
        """The Optuna parameter names this dimension suggests (flat, "/"-separated)."""
        if self.kind == "eta" and not self.shared:
            return ("search/eta_init_k1", "search/eta_init_k2")
        return (f"{self.target}/{self.name}",)

    @property
    def counts(self) -> bool:
        """True when the dimension changes the parameter count."""
        return self.target == "model" and self.name in COUNT_FIELDS

    def values(self) -> list[Any] | None:
        """Every value (categorical or integer range), or None for continuous ranges."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return None

    def representatives(self) -> list[Any]:
        """Values that bound what this dimension can propose (for validation)."""
        vals = self.values()
        if vals is not None:
            return vals if self.kind == "categorical" else sorted({vals[0], vals[-1]})
        if self.kind == "eta":
            return [(self.low, self.low), (self.high, self.high), (self.low, self.high)]
        return [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        """Draw a value from an Optuna trial (or Ray's wrapper around one)."""
        if self.kind == "categorical":
            table = {_encode(c): c for c in self.choices}
            return table[trial.suggest_categorical(self.param_names[0], list(table))]
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(self.param_names[0], int(self.low), int(self.high), step=step, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.param_names[0], self.low, self.high, log=self.log, step=self.step)
        ks = [trial.suggest_float(n, self.low, self.high, log=self.log) for n in self.param_names]
        return (ks[0], ks[0]) if self.shared else (ks[0], ks[1])

    def describe(self) -> str:
        if self.kind == "categorical":
            return "choice of " + ", ".join(_show(c) for c in self.choices)
        text = f"{self.kind} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")
        if self.step not in (None, 1):
            text += f" step {self.step:g}"
        if self.kind == "eta":
            text += ", shared by K1 and K2" if self.shared else ", K1 and K2 drawn separately"
        return text


def _parse_dimension(
    name: str, kind: str, target: str, spec: Mapping[str, Any], path: str, err: Any
) -> Dimension | None:
    keys = set(spec)
    if "choices" in keys:
        extra = sorted(keys - {"choices"})
        if extra:
            err(path, f"'choices' excludes {', '.join(extra)}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            err(f"{path}.choices", "must be a non-empty list")
            return None
        values, ok = [], True
        for i, c in enumerate(choices):
            v, problem = _normalise(kind, c)
            if problem:
                err(f"{path}.choices[{i}]", problem)
                ok = False
            values.append(v)
        if not ok:
            return None
        encoded = [_encode(v) for v in values]
        if len(set(map(repr, encoded))) != len(encoded):
            err(f"{path}.choices", "contains duplicates")
            return None
        return Dimension(name, target, "categorical", tuple(values))
    allowed = _RANGE_KEYS | ({"shared"} if name == "eta_init" else set())
    extra = sorted(keys - allowed)
    if extra:
        err(path, f"unknown key(s) {', '.join(extra)}; give 'choices', or 'low'/'high' (+ 'log', 'step'"
                  + (", 'shared'" if name == "eta_init" else "") + ")")
        return None
    range_kind = {"int": "int", "float": "float", "tuple[float, float]": "eta"}.get(kind)
    if range_kind is None:
        err(path, f"{name} takes 'choices' only (no numeric range)")
        return None
    if "low" not in spec or "high" not in spec:
        err(path, "a range needs both 'low' and 'high'")
        return None
    num = _is_int if range_kind == "int" else (lambda v: _as_float(v) is not None)
    bad = False
    for key in ("low", "high"):
        if not num(spec[key]):
            err(f"{path}.{key}", f"{spec[key]!r} is not {'an integer' if range_kind == 'int' else 'a number'}")
            bad = True
    log, step, shared = spec.get("log", False), spec.get("step"), spec.get("shared", True)
    if not isinstance(log, bool):
        err(f"{path}.log", f"{log!r} is not true/false")
        bad = True
    if not isinstance(shared, bool):
        err(f"{path}.shared", f"{shared!r} is not true/false")
        bad = True
    if step is not None and (not num(step) or _as_float(step) <= 0 or range_kind == "eta"):
        err(f"{path}.step", f"{step!r} must be a positive {'integer' if range_kind == 'int' else 'number'}"
                            + (" (no step for eta_init)" if range_kind == "eta" else ""))
        bad = True
    if bad:
        return None
    low, high = spec["low"], spec["high"]
    if range_kind != "int":
        low, high = float(_as_float(low)), float(_as_float(high))
        step = float(_as_float(step)) if step is not None else None
    if low >= high:
        err(path, f"low {low} must be below high {high}")
        return None
    if log and low <= 0:
        err(f"{path}.log", f"a log range needs low > 0 (got {low})")
        return None
    if log and step not in (None, 1):
        err(f"{path}.step", "a log range takes no step")
        return None
    return Dimension(name, target, range_kind, (), low, high, log, step, shared)


# ---------------------------------------------------------------------------------- the space
@dataclass(frozen=True, eq=False)
class Space:
    """A validated search space; every combination of its count-changing choices has a solved width
    within ``budget.tolerance`` (``solutions``)."""

    name: str
    dataset: str
    budget: Budget
    base: Mapping[str, Any] = field(repr=False)  # all ModelConfig values but the searched (width: placeholder)
    fixed: Mapping[str, Any]  # the model values the file fixes (for display)
    train: Mapping[str, Any]
    dimensions: tuple[Dimension, ...]
    solutions: Mapping[tuple[Any, ...], Solution] = field(repr=False)
    description: str = ""
    source: str = "<dict>"

    @property
    def count_dimensions(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.counts)

    def combinations(self) -> list[dict[str, Any]]:
        """Every assignment of the count-changing dimensions (one dict per combination)."""
        dims = self.count_dimensions
        return [dict(zip((d.name for d in dims), combo)) for combo in itertools.product(*(d.values() for d in dims))]

    def solution(self, assignment: Mapping[str, Any]) -> Solution:
        """The solved width for an assignment of (at least) the count-changing dimensions."""
        key = tuple(assignment[d.name] for d in self.count_dimensions)
        sol = self.solutions.get(key)
        if sol is None:  # not a combination of the file's choices: solve it now
            values = {**self.base, **{k: v for k, v in assignment.items() if k in self.base}}
            sol = _solve(values, self.budget)
        return sol

    def model_values(self, assignment: Mapping[str, Any]) -> dict[str, Any]:
        """Complete ModelConfig values for an assignment of model dimensions, width solved."""
        values = {**self.base, **{k: v for k, v in assignment.items() if k in self.base}}
        sol = self.solution(assignment)
        values[sol.field] = sol.width
        return values

    def model_config(self, assignment: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**self.model_values(assignment))

    def define_by_run(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run function for Ray's ``OptunaSearch(space=space.define_by_run)``;
        see :func:`search_spaces.define_by_run.define_by_run`."""
        from .define_by_run import define_by_run

        return define_by_run(self, trial)

    def table(self) -> list[dict[str, Any]]:
        """One row per combination: its choices, solved width, count and deviation."""
        rows = []
        for assignment in self.combinations():
            sol = self.solution(assignment)
            rows.append({**assignment, sol.field: sol.width, "count": sol.count,
                         "deviation": sol.deviation, "feasible": sol.feasible})
        return rows

    def describe(self) -> str:
        """A human-readable summary (name, data, budget, fixed values, dimensions, training)."""
        lines = [f"space {self.name}  ({self.source})"]
        if self.description:
            lines.append(f"  {self.description}")
        lines.append(f"  dataset: {self.dataset}")
        lines.append(f"  budget: {self.budget.describe()}")
        if self.fixed:
            lines.append("  fixed model values:")
            lines += [f"    {k}: {_show(v)}" for k, v in self.fixed.items()]
        lines.append("  searched:")
        lines += [f"    {d.target}.{d.name}: {d.describe()}" for d in self.dimensions] or ["    (nothing)"]
        if self.train:
            lines.append("  train: " + ", ".join(f"{k}={v}" for k, v in self.train.items()))
        return "\n".join(lines)


def _solve(values: Mapping[str, Any], budget: Budget) -> Solution:
    arch = Arch(*(values[f] for f in COUNT_FIELDS))
    return solve_arch(arch, budget.params, budget.tolerance)


def _config_problems(values: Mapping[str, Any]) -> list[str]:
    try:
        ModelConfig(**values)
    except ConfigError as e:
        return str(e).split("; ")
    return []


def _combo_text(assignment: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in assignment.items())


def _messages_about(messages: Iterable[str], key: str) -> list[str]:
    """The ModelConfig problem messages that concern field ``key`` (text after "key:")."""
    out = []
    for msg in messages:
        head, sep, text = msg.partition(":")
        if sep and head.strip() == key:
            out.append(text.strip())
        elif (not sep or head.strip() not in _FIELD_TYPES) and key in msg:
            out.append(msg)
    return out


class _Collector:
    """Problems in file order, one line each: ``<source>: <key path>: <message>``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def __call__(self, path: str, message: str) -> None:
        line = f"{self.source}: {path}: {message}"
        if line not in self.lines:
            self.lines.append(line)


def space_from_dict(data: Any, source: str = "<dict>", default_name: str = "space") -> Space:
    """Validate a parsed space file; raises :class:`SpaceError` listing every problem.

    Three passes: types and structure; each fixed value and each searched choice/bound against the
    model config's own rules; then every combination of count-changing choices (valid config, and a
    width within tolerance of the budget).
    """
    err = _Collector(source)
    if not isinstance(data, Mapping):
        raise SpaceError([f"{source}: (top level): must be a mapping of {', '.join(TOP_KEYS)}"])
    for key in data:
        if key not in TOP_KEYS:
            err(str(key), f"unknown key; valid keys: {', '.join(TOP_KEYS)}")

    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        err("name", f"{name!r} is not a non-empty string")
        name = default_name
    description = data.get("description", "")
    if not isinstance(description, str):
        err("description", "must be a string")
        description = ""

    count_ok = True  # the feasibility pass needs valid count-changing values
    dataset = data.get("dataset")
    if dataset is None:
        err("dataset", f"missing; one of {', '.join(DATASETS)}")
        count_ok = False
    elif not isinstance(dataset, str) or dataset.lower() not in DATASETS:
        err("dataset", f"{dataset!r} is not one of {', '.join(DATASETS)}")
        count_ok = False
    dataset = dataset.lower() if isinstance(dataset, str) else ""

    tolerance = data.get("tolerance", DEFAULT_TOLERANCE)
    tol = _as_float(tolerance)
    if tol is None or not 0 < tol < 1:
        err("tolerance", f"{tolerance!r} must be a relative tolerance in (0, 1), e.g. 0.015")
        tol = DEFAULT_TOLERANCE
    budget: Budget | None = None
    if "budget" not in data:
        err("budget", f"missing; a preset ({', '.join(BUDGETS)}) or a number of parameters")
    else:
        try:
            budget = make_budget(data["budget"], tol)
        except UnknownBudget as e:
            err("budget", str(e))

    # defaults: the authors' toy or image model, with the data set's shape
    toy = dataset in TOY_SETS
    base: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in (toy_config() if toy else ModelConfig()).to_dict().items()
    }
    if dataset in DATASETS:
        shape, levels = DATASETS[dataset]
        base["input_shape"] = shape
        if levels is not None:
            base["n_levels"] = levels

    sections: dict[str, Mapping[str, Any]] = {}
    for sec in ("model", "search", "train"):
        raw = data.get(sec)
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            err(sec, "must be a mapping")
            raw = {}
        sections[sec] = raw
    model_raw, search_raw, train_raw = sections["model"], sections["search"], sections["train"]

    # the width the solver sets: growth (i-DenseNet) or hidden (Residual Flow), per possible family
    fam_spec = search_raw.get("family", model_raw.get("family", base["family"]))
    fam_values = fam_spec.get("choices") if isinstance(fam_spec, Mapping) else [fam_spec]
    fams = [f for f in fam_values if f in FAMILIES] if isinstance(fam_values, list) else []
    solved = {width_field(f) for f in fams} or {"growth"}

    # ---- pass 1: structure and types
    fixed: dict[str, tuple[Any, str]] = {}  # field -> (value, key path)
    for key, value in model_raw.items():
        path = f"model.{key}"
        if key not in _FIELD_TYPES:
            err(path, "unknown model config field")
            continue
        v, problem = _normalise(_FIELD_TYPES[key], value)
        if problem:
            err(path, problem)
            count_ok = count_ok and key not in COUNT_FIELDS
        elif key in solved:
            err(path, f"{key} is solved from the budget; remove it")
        else:
            fixed[key] = (v, path)

    train: dict[str, Any] = {}

    def set_train(key: str, value: Any, path: str) -> None:
        if key in TRAIN_KINDS:
            v, problem = _normalise(TRAIN_KINDS[key], value)
            if problem is None and key == "weight_decay" and v < 0:
                problem = f"{value!r} must be >= 0"
            elif problem is None and key not in ("weight_decay", "seed") and v <= 0:
                problem = f"{value!r} must be > 0"
            if problem:
                err(path, problem)
                return
            train[key] = v
        elif isinstance(value, (str, int, float, bool)) or value is None:
            train[key] = value
        else:
            err(path, f"{value!r} must be a plain value (number, string, true/false)")

    for key, value in train_raw.items():
        set_train(str(key), value, f"train.{key}")

    dims: list[Dimension] = []
    for key, spec in search_raw.items():
        path = f"search.{key}"
        if key in TRAIN_SEARCHABLE:
            target, kind = "train", TRAIN_SEARCHABLE[key]
        elif key in _FIELD_TYPES:
            target, kind = "model", _FIELD_TYPES[key]
        else:
            err(path, f"unknown dimension; a model config field or one of {', '.join(TRAIN_SEARCHABLE)}")
            continue
        if target == "model" and key in solved:
            err(path, f"{key} is solved from the budget; it cannot be searched")
            continue
        if target == "model" and key in model_raw:
            err(path, f"also fixed under model.{key}; give it once")
            continue
        if not isinstance(spec, Mapping):  # a plain value fixes it
            if target == "train":
                set_train(key, spec, path)
                continue
            v, problem = _normalise(kind, spec)
            if problem:
                err(path, problem)
                count_ok = count_ok and key not in COUNT_FIELDS
            else:
                fixed[key] = (v, path)
            continue
        if key == "input_shape":
            err(path, "input_shape is fixed by the dataset")
            continue
        dim = _parse_dimension(key, kind, target, spec, path, err)
        if dim is None:
            count_ok = count_ok and key not in COUNT_FIELDS
        elif dim.counts and dim.kind not in ("categorical", "int"):
            err(path, f"{key} changes the parameter count; give 'choices' or an integer range")
            count_ok = False
        elif target == "train" and key == "lr" and dim.low <= 0:
            err(path, "the learning rate must be > 0")
        else:
            dims.append(dim)

    # ---- pass 2: each fixed value and each searched value against the config rules
    for s in solved:  # a placeholder valid for every activation until the width is solved
        base[s] = 2
    model_dims = [d for d in dims if d.target == "model"]
    reference = {**base, **{k: v for k, (v, _) in fixed.items()}, **{d.name: d.representatives()[0] for d in model_dims}}
    for key, (value, path) in fixed.items():
        if key == "input_shape" and dataset in DATASETS and value != DATASETS[dataset][0]:
            err(path, f"{list(value)} does not match dataset {dataset} {list(DATASETS[dataset][0])}")
        elif key == "n_levels" and not toy and dataset in DATASETS and value != DATASETS[dataset][1]:
            err(path, f"{value} does not match dataset {dataset} ({DATASETS[dataset][1]} levels)")
        else:
            found = _messages_about(_config_problems(reference), key)
            for text in found:
                err(path, text)
            if not found:
                base[key] = value
                continue
        count_ok = count_ok and key not in COUNT_FIELDS
    good_dims: list[Dimension] = []  # for pass 3: count dimensions keep only their valid values
    for d in dims:
        if d.target == "train":
            good_dims.append(d)
            continue
        valid = []
        for v in (d.values() if d.counts else d.representatives()):
            found = _messages_about(_config_problems({**reference, d.name: v}), d.name)
            for text in found:
                err(f"search.{d.name}", text)
            if not found:
                valid.append(v)
        if not d.counts:
            if valid:  # pass 3 sets it to a valid value
                good_dims.append(dataclasses.replace(d, kind="categorical", choices=(valid[0],)))
        elif valid:
            good_dims.append(dataclasses.replace(d, kind="categorical", choices=tuple(valid)))
        else:
            count_ok = False

    # ---- pass 3: every combination of count-changing choices, solved against the budget
    solutions: dict[tuple[Any, ...], Solution] = {}
    if count_ok and budget is not None:
        _check_combinations(base, good_dims, budget, err, solutions)

    if err.lines:
        raise SpaceError(err.lines)
    assert budget is not None
    return Space(
        name=name, dataset=dataset, budget=budget, base=dict(base),
        fixed={k: v for k, (v, _) in fixed.items()}, train=train, dimensions=tuple(dims),
        solutions=solutions, description=description, source=source,
    )


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
        context = _combo_text(assignment)
        where = "search" if assignment else "model"
        values = {**base, **rep, **assignment}
        found = _config_problems(values)
        if found:  # a combination the config rules reject (e.g. odd fc_growth with CLipSwish)
            for msg in found:
                key = msg.partition(":")[0].strip()
                path = f"search.{key}" if key in dim_names else (f"model.{key}" if key in _FIELD_TYPES else "model")
                err(path, f"{msg} (with {context})" if context else msg)
            continue
        try:
            sol = _solve(values, budget)
        except ValueError as e:
            err(where, f"{context + ': ' if context else ''}{e}")
            continue
        solutions[combo] = sol
        if not sol.feasible:
            err(where, f"{context + ': ' if context else ''}no {sol.field} within "
                       f"±{100 * budget.tolerance:g}% of {budget.params:,}; nearest {sol.nearest_text()}")
            continue
        for msg in _config_problems({**values, sol.field: sol.width}):
            err(where, f"{context + ': ' if context else ''}{msg}")



# ---------------------------------------------------------------------------------- loading
def shipped_spaces() -> list[str]:
    """Names of the space files shipped with this package."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml"))


def load_space(path_or_name: str | Path) -> Space:
    """Load and validate a space from a YAML file, or a shipped space by name (``cifar10-small``).

    Raises :class:`SpaceError` whose message has one line per problem, each with its key path.
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
            raise SpaceError([f"{text}: no such file, nor a shipped space ({', '.join(shipped_spaces())})"])
        source, default_name = f"{name}.yaml", name
        raw = res.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise SpaceError([f"{source}: {where}: YAML syntax error: {getattr(e, 'problem', None) or e}"]) from None
    return space_from_dict(data, source=source, default_name=default_name)
