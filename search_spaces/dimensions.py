"""Searched dimensions of a space file: one model field or training value each, drawn from an Optuna trial.

A dimension is categorical (``choices``), an integer or float range (``low``..``high``, optional
``log`` and ``step``), or ``eta_init``: the initial K₁, K₂ of the learnable concatenation (paper
§3.3), one value shared by both or one each. Choices Optuna cannot hold (lists such as
``blocks_per_scale``) are encoded as text (``"4-4-4"``) and decoded on the way back.

When ``family`` is searched the space is conditional: a proposal draws only the architecture fields
of its own family (an i-DenseNet's depth is not drawn for a Residual Flow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from model.config import SHARED_FIELDS
from model.families import get_family
from model.values import as_number, coerce, is_whole

from .count import count_fields

RANGE_KEYS = {"low", "high", "log", "step"}


# ---------------------------------------------------------------------------------- values
def encode(value: Any) -> Any:
    """An Optuna categorical choice for ``value`` (Optuna takes None/bool/int/float/str only)."""
    if isinstance(value, tuple):
        if all(is_whole(v) for v in value):
            return "-".join(str(v) for v in value)
        return json.dumps(list(value))
    return value


def show(value: Any) -> str:
    enc = encode(value)
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
        return self.target == "model" and self.name in count_fields()

    def applies_to(self, family: str) -> bool:
        """False for an architecture field that ``family`` does not have."""
        return self.target != "model" or self.name in SHARED_FIELDS or self.name in get_family(family).fields()

    def params_for(self, value: Any) -> dict[str, Any]:
        """The Optuna parameters that make :meth:`suggest` return ``value`` (for an enqueued trial);
        empty when the value lies outside this dimension."""
        if self.kind == "categorical":
            table = {repr(encode(c)): encode(c) for c in self.choices}
            key = repr(encode(tuple(value) if isinstance(value, list) else value))
            return {self.param_names[0]: table[key]} if key in table else {}
        if self.kind == "eta":
            pair = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else (value, value)))
            if not all(self.low <= v <= self.high for v in pair) or (self.shared and pair[0] != pair[1]):
                return {}
            return dict(zip(self.param_names, pair[:1] if self.shared else pair))
        number = as_number(value)
        if number is None or not self.low <= number <= self.high:
            return {}
        if self.kind == "int":
            if not float(number).is_integer() or (int(number) - int(self.low)) % int(self.step or 1):
                return {}
            return {self.param_names[0]: int(number)}
        if self.step is not None and abs(round((number - self.low) / self.step) * self.step - (number - self.low)) > 1e-12:
            return {}
        return {self.param_names[0]: number}

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
            table = {encode(c): c for c in self.choices}
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
            return "choice of " + ", ".join(show(c) for c in self.choices)
        text = f"{self.kind} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")
        if self.step not in (None, 1):
            text += f" step {self.step:g}"
        if self.kind == "eta":
            text += ", shared by K1 and K2" if self.shared else ", K1 and K2 drawn separately"
        return text


def parse_dimension(
    name: str, kind: str, target: str, spec: Mapping[str, Any], path: str, err: Any
) -> Dimension | None:
    """The dimension a ``search:`` entry describes (``choices``, or a range), or None after
    reporting its problems to ``err(key path, message)``; ``kind`` is the field's kind."""
    if "choices" in spec:
        return _categorical(name, kind, target, spec, path, err)
    return _range(name, kind, target, spec, path, err)


def _categorical(name: str, kind: str, target: str, spec: Mapping[str, Any], path: str, err: Any) -> Dimension | None:
    """``{choices: [...]}``: every choice coerced to the field's kind, no duplicates."""
    extra = sorted(set(spec) - {"choices"})
    if extra:
        err(path, f"'choices' excludes {', '.join(extra)}")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        err(f"{path}.choices", "must be a non-empty list")
        return None
    values, ok = [], True
    for i, c in enumerate(choices):
        v, problem = coerce(kind, c)
        if problem:
            err(f"{path}.choices[{i}]", problem)
            ok = False
        values.append(v)
    if not ok:
        return None
    encoded = [encode(v) for v in values]
    if len(set(map(repr, encoded))) != len(encoded):
        err(f"{path}.choices", "contains duplicates")
        return None
    return Dimension(name, target, "categorical", tuple(values))


def _range(name: str, kind: str, target: str, spec: Mapping[str, Any], path: str, err: Any) -> Dimension | None:
    """``{low, high}`` with optional ``log`` and ``step`` (``shared`` for ``eta_init``): an integer, float
    or η range, its bounds ordered, a log range positive and without a step."""
    keys = set(spec)
    allowed = RANGE_KEYS | ({"shared"} if name == "eta_init" else set())
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
    num = is_whole if range_kind == "int" else (lambda v: as_number(v) is not None)
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
    if step is not None and (not num(step) or as_number(step) <= 0 or range_kind == "eta"):
        err(f"{path}.step", f"{step!r} must be a positive {'integer' if range_kind == 'int' else 'number'}"
                            + (" (no step for eta_init)" if range_kind == "eta" else ""))
        bad = True
    if bad:
        return None
    low, high = spec["low"], spec["high"]
    if range_kind != "int":
        low, high = float(as_number(low)), float(as_number(high))
        step = float(as_number(step)) if step is not None else None
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


