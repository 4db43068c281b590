"""The family registry: name -> :class:`~model.families.base.Family`.

The built-in families register when :mod:`model.families` is imported; a family defined elsewhere
registers by importing its module. A Ray worker sees the families of the process that started the
sweep: the trial's config lists the modules of the families registered outside this package
(:func:`plugin_modules`), and the worker imports them (:func:`import_modules`) before reading it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Iterable

from ..errors import ConfigError
from ..values import kind_of
from .base import Family

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family``; its name must be new, and a field it shares with another family must have the
    same kind and default there (a search space holds one value per field name)."""
    if family.name in _FAMILIES:
        raise ValueError(f"a family named {family.name!r} is already registered")
    mine = {f.name: f for f in dataclasses.fields(family.arch_type)}
    for other in _FAMILIES.values():
        for f in dataclasses.fields(other.arch_type):
            if f.name in mine and (kind_of(mine[f.name].type), _default(mine[f.name])) != (kind_of(f.type), _default(f)):
                raise ValueError(f"family {family.name!r}: field {f.name!r} differs from family {other.name!r}'s")
    if family.defines_budget and any(f.defines_budget for f in _FAMILIES.values()):
        raise ValueError(f"family {family.name!r}: only one family defines the parameter budget")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (for tests that register one of their own)."""
    _FAMILIES.pop(name, None)


def get_family(name: str) -> Family:
    """The family called ``name``; :class:`ConfigError` naming the registered ones otherwise."""
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError([("family", f"{name!r} is not one of {', '.join(_FAMILIES)}")]) from None


def families() -> tuple[Family, ...]:
    """Every registered family, in registration order (the built-ins first)."""
    return tuple(_FAMILIES.values())


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def budget_family() -> Family:
    """The family whose models define parameter budgets (the control arm of every sweep)."""
    return next(f for f in _FAMILIES.values() if f.defines_budget)


def arch_fields() -> dict[str, dataclasses.Field]:
    """Every family's architecture fields by name (a shared name appears once)."""
    out: dict[str, dataclasses.Field] = {}
    for family in _FAMILIES.values():
        for f in dataclasses.fields(family.arch_type):
            out.setdefault(f.name, f)
    return out


def arch_defaults() -> dict[str, Any]:
    """Every family's architecture defaults by field name."""
    out: dict[str, Any] = {}
    for family in _FAMILIES.values():
        out.update({k: v for k, v in dataclasses.asdict(family.arch_type()).items() if k not in out})
    return out


def plugin_modules() -> list[str]:
    """Modules of the registered families that live outside :mod:`model.families`."""
    return sorted({type(f).__module__ for f in _FAMILIES.values()} - {m for m in _builtin_modules()})


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules that register families (those of :func:`plugin_modules` in another process)."""
    for module in modules:
        if not any(type(f).__module__ == module for f in _FAMILIES.values()):
            importlib.import_module(module)


def _builtin_modules() -> list[str]:
    return [m for m in (type(f).__module__ for f in _FAMILIES.values()) if m.startswith(__package__ + ".")]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None
