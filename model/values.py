"""The one coercer: text and YAML values turned into the typed fields of every config.

A field's kind is its annotation (``int``, ``float``, ``bool``, ``str``, ``int | None``,
``float | None``, ``tuple[int, ...]``, ``tuple[float, float]``). Numbers written as text count as
numbers (YAML reads ``1e-3`` as a string), a whole float counts as an integer, one number stands
for both members of a pair, and lists become tuples, so a config read from YAML, JSON or a command line compares equal to one built in Python.
Used by :class:`model.config.ModelConfig`, every family's architecture config,
:class:`model.train_config.TrainConfig` and the searched dimensions of a space.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

Problem = tuple[str, str]


def is_whole(v: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def as_number(v: Any) -> float | None:
    """``v`` as a float when it is a number or a numeric string (not a bool), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def _whole(value: Any) -> tuple[Any, str | None]:
    if is_whole(value):
        return value, None
    number = as_number(value)
    if number is None or not number.is_integer():
        return None, f"{value!r} is not a whole number"
    return int(number), None


def _float(value: Any) -> tuple[Any, str | None]:
    number = as_number(value)
    return (number, None) if number is not None else (None, f"{value!r} is not a number")


def coerce(kind: str, value: Any) -> tuple[Any, str | None]:
    """``(value in canonical form, None)``, or ``(None, problem)`` when ``value`` cannot be of ``kind``."""
    if kind == "Any":
        return value, None
    if kind.endswith(" | None"):
        return (None, None) if value is None else coerce(kind[: -len(" | None")], value)
    if kind == "int":
        return _whole(value)
    if kind == "float":
        return _float(value)
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, f"{value!r} is not true or false")
    if kind == "str":
        return (value, None) if isinstance(value, str) else (None, f"{value!r} is not text")
    if kind == "tuple[float, float]" and as_number(value) is not None:
        return (as_number(value),) * 2, None  # one number stands for both
    if kind in ("tuple[int, ...]", "tuple[float, float]"):
        one = _whole if kind == "tuple[int, ...]" else _float
        want = "a non-empty list of whole numbers" if kind == "tuple[int, ...]" else "a pair of numbers"
        if not isinstance(value, (list, tuple)) or not value or (kind != "tuple[int, ...]" and len(value) != 2):
            return None, f"{value!r} is not {want}"
        items = [one(v) for v in value]
        if any(problem for _, problem in items):
            return None, f"{value!r} is not {want}"
        return tuple(v for v, _ in items), None
    raise TypeError(f"no coercion for fields of kind {kind!r}")


def field_kinds(cls: type) -> dict[str, str]:
    """Field name -> kind (its annotation as text, as :func:`coerce` reads it) of a dataclass, whether
    or not its module postpones annotations."""
    return {f.name: kind_of(f.type) for f in fields(cls)}


def kind_of(annotation: Any) -> str:
    """An annotation as the text :func:`coerce` reads (``int``, ``tuple[int, ...]``, ``int | None``)."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def coerce_fields(obj: Any) -> list[Problem]:
    """Coerce every field of the frozen dataclass ``obj`` in place; the fields that cannot be coerced,
    as ``(field, problem)`` pairs."""
    problems = []
    for name, kind in field_kinds(type(obj)).items():
        value, problem = coerce(kind, getattr(obj, name))
        if problem:
            problems.append((name, problem))
        else:
            object.__setattr__(obj, name, value)
    return problems


def plain_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields as builtins (tuples become lists), for YAML/JSON."""
    return {f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v for f in fields(obj)}


def unknown_keys(cls: type, data: Mapping[str, Any]) -> list[str]:
    """The keys of ``data`` that are not fields of the dataclass ``cls``, sorted."""
    return sorted(set(data) - {f.name for f in fields(cls)})
