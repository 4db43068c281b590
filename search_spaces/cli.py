"""Command line for budgets and spaces: ``space show``, ``space list`` and ``count``.

``register(subparsers)`` adds the subcommands to the one ``idensenet`` parser (:mod:`sweeper.cli`);
each sets ``func`` to a ``cmd_*(args) -> int``. Bad input raises :class:`UserError`, which the
entry point prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from model.config import ACTIVATIONS, ModelConfig, flat_dict, model_config, toy_config
from model.datasets import DATASETS
from model.errors import UserError
from model.families import arch_fields, family_names
from model.values import coerce, kind_of

from .budgets import BUDGETS, DEFAULT_TOLERANCE, REFERENCE_CONFIGS, make_budget
from .count import count_parameters
from .dimensions import show
from .schedule import early_rung_warnings
from .solver import BudgetError, nearest_width, with_width
from .space import load_space, shipped_spaces



# ---------------------------------------------------------------------------------- space
def _format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no combinations)"
    cols = list(rows[0])
    text = [[_cell(c, r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(s.rjust(w) for s, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(t) for t in text])


def _cell(col: str, value: Any) -> str:
    if col == "deviation":
        return f"{100 * value:+.2f}%"
    if col == "count":
        return f"{value:,}"
    if col == "feasible":
        return "yes" if value else "NO"
    return show(value)


def cmd_space_show(args: argparse.Namespace) -> int:
    """Print a space and, per combination of count-changing choices, the solved width and count."""
    space = load_space(args.space)
    print(space.describe())
    print()
    print(_format_table(space.table()))
    for line in early_rung_warnings(space):
        print(f"warning: {line}")
    return 0


def cmd_space_list(args: argparse.Namespace) -> int:
    """Print the shipped spaces and the budget presets."""
    print("shipped spaces: " + ", ".join(shipped_spaces()))
    print("budget presets:")
    for name, params in BUDGETS.items():
        ref = REFERENCE_CONFIGS[name]
        print(f"  {name:14s} {params:>12,}  {ref.family} {'-'.join(map(str, ref.blocks_per_scale))}"
              f" on {'x'.join(map(str, ref.input_shape))}")
    return 0


# ---------------------------------------------------------------------------------- count
def _ints(text: str, what: str) -> tuple[int, ...]:
    """Integers separated by '-', ',' or 'x' (4-4-4, 3,32,32, 3x32x32)."""
    try:
        return tuple(int(p) for p in re.split(r"[-,x]", text.strip()))
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a list of integers (e.g. 4-4-4 or 3,32,32)") from None


def _read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config: no such file {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML/JSON ({getattr(e, 'problem', e)})") from None
    if isinstance(data, dict) and isinstance(data.get("run"), dict):
        data = data["run"]  # an entry of best.yaml
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]  # a run config {"model": {...}, "train": {...}}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: must hold a mapping of model config fields")
    return flat_dict(data)


def _arch_flag_fields() -> dict[str, str]:
    """Every registered family's architecture field -> its kind (``count`` has a flag for each)."""
    return {name: kind_of(f.type) for name, f in arch_fields().items()}


def _flag_value(text: str, kind: str, flag: str) -> Any:
    """A flag's text as a value of ``kind`` (lists written 4-4-4 or 3,32,32)."""
    raw: Any = text
    if kind.startswith("tuple["):
        raw = [p for p in re.split(r"[-,x]", text.strip()) if p]
    value, problem = coerce(kind, raw)
    if problem:
        raise UserError(f"{flag}: {problem}")
    return value


def config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The model config of ``count``: defaults (toy defaults for 2-D data), then ``--config``, then
    the flags."""
    values: dict[str, Any] = _read_config_file(args.config) if args.config else {}
    for field in ("family", "activation", "fc_blocks"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    for field, kind in _arch_flag_fields().items():
        v = getattr(args, field, None)
        if v is not None:
            values[field] = v if kind == "bool" else _flag_value(v, kind, "--" + field.replace("_", "-"))
    if args.dataset:
        key = args.dataset.lower()
        if key not in DATASETS:
            raise UserError(f"--dataset: {args.dataset!r} is not one of {', '.join(DATASETS)}")
        info = DATASETS[key]
        values["input_shape"] = info.shape
        if info.n_levels is not None:
            values["n_levels"] = info.n_levels
    if args.input_shape:
        values["input_shape"] = _ints(args.input_shape, "--input-shape")
    if args.blocks:
        values["blocks_per_scale"] = _ints(args.blocks, "--blocks")
    if args.actnorm is not None:
        values["actnorm"] = args.actnorm
    shape = values.get("input_shape")
    toy = shape is not None and len(tuple(shape)) == 1
    try:
        return toy_config(**values) if toy else model_config(**values)
    except TypeError as e:
        raise UserError(f"config: {e}") from None


def cmd_count(args: argparse.Namespace) -> int:
    """Print the exact parameter count of a config (and its deviation from a budget)."""
    cfg = config_from_args(args)
    if args.solve and args.budget is None:
        raise UserError("--solve needs --budget")
    if args.budget is not None:
        budget = make_budget(args.budget, args.tolerance)
        if args.solve:
            sol = nearest_width(cfg, budget.params, budget.tolerance)
            cfg = with_width(cfg, sol.width)
            if not sol.feasible:
                raise BudgetError(f"no {sol.field} fits {budget.describe()}: nearest {sol.nearest_text()}")
    count = count_parameters(cfg)
    if args.json:
        out: dict[str, Any] = {"count": count, "model": cfg.to_dict()}
        if args.budget is not None:
            out.update(budget=budget.params, deviation=budget.deviation(count), within=budget.fits(count))
        print(json.dumps(out))
        return 0
    summary = (f"{cfg.family}, {cfg.activation}, input {'x'.join(map(str, cfg.input_shape))}, "
               f"blocks {'-'.join(map(str, cfg.blocks_per_scale))}, {cfg.family_spec.label(cfg.arch, cfg.is_toy)}")
    print(summary)
    print(f"parameters: {count:,}")
    if args.budget is not None:
        dev = budget.deviation(count)
        print(f"budget: {budget.describe()}; deviation {100 * dev:+.2f}% "
              f"({'within' if budget.fits(count) else 'OUTSIDE'} tolerance)")
    return 0


# ---------------------------------------------------------------------------------- wiring
def register(subparsers: Any) -> None:
    """Add ``space {show,list}`` and ``count`` to an argparse subparsers object; each parser sets
    ``func`` (args -> exit code; bad input raises :class:`UserError`, which the entry point prints)."""
    sp = subparsers.add_parser("space", help="search spaces: show one, list the shipped ones")
    sub = sp.add_subparsers(dest="space_command", metavar="{show,list}")
    sub.required = True
    show = sub.add_parser("show", help="print a space and its solved growth per depth/activation/blocks")
    show.add_argument("space", metavar="FILE_OR_NAME", help=f"a YAML file or one of: {', '.join(shipped_spaces())}")
    show.set_defaults(func=cmd_space_show)
    lst = sub.add_parser("list", help="list shipped spaces and budget presets")
    lst.set_defaults(func=cmd_space_list)

    c = subparsers.add_parser("count", help="exact parameter count of a model config (no building)")
    c.add_argument("--config", help="YAML/JSON file of model config fields (or a trial config with 'model:')")
    c.add_argument("--family", choices=family_names())
    c.add_argument("--activation", choices=ACTIVATIONS)
    c.add_argument("--fc-blocks", dest="fc_blocks", type=int)
    c.add_argument("--blocks", help="blocks per scale, e.g. 4-4-4 (toy: 10)")
    c.add_argument("--input-shape", dest="input_shape", help="e.g. 3,32,32 or 1,8,8 or 2")
    c.add_argument("--dataset", help=f"sets the input shape: {', '.join(DATASETS)}")
    arch = c.add_argument_group("architecture fields (of the model's family; lists as 4-4-4)")
    for field, kind in _arch_flag_fields().items():
        flag = "--" + field.replace("_", "-")
        if kind == "bool":
            arch.add_argument(flag, dest=field, action="store_true", default=None)
            arch.add_argument("--no-" + flag[2:], dest=field, action="store_false")
        else:
            arch.add_argument(flag, dest=field, metavar=kind.split("[")[0].upper())
    c.add_argument("--actnorm", dest="actnorm", action="store_true", default=None)
    c.add_argument("--no-actnorm", dest="actnorm", action="store_false")
    c.add_argument("--budget", help=f"preset ({', '.join(BUDGETS)}) or a number: print the deviation")
    c.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="relative, default 0.015")
    c.add_argument("--solve", action="store_true", help="set the growth (hidden) closest to --budget first")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_count)
