"""The studies' sub-commands of ``idensenet`` (``toy``, ``signal``, ``reproduce``, ``scaling``,
``eta``), registered on the one parser of :mod:`sweeper.cli`. Each study's module is imported when
its command runs, so that the other commands never load torch or Ray for them; bad input raises
:class:`model.errors.UserError`, which the entry point prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable

from model.config import ACTIVATIONS, ModelConfig
from model.datasets import TOY_SETS
from model.families import family_names


def _runs(module: str) -> Callable[[argparse.Namespace], int]:
    """The command function: ``studies.<module>.run(args)``."""

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(f"studies.{module}").run(args) or 0)

    return run


def register(sub: Any, key_value: Callable[[str], tuple[str, Any]]) -> None:
    """Add every study's parser to the subparsers ``sub`` (``key_value`` parses ``--train KEY=VALUE``)."""
    t = sub.add_parser("toy", help="train a toy 2-D flow without Ray and print its test NLL in nats",
                       description="Train a toy 2-D flow with the authors' recipe and print its test NLL in nats.")
    t.add_argument("--data", default="moons", choices=TOY_SETS)
    t.add_argument("--family", default=ModelConfig.family, choices=family_names())
    t.add_argument("--activation", default="lipswish", choices=ACTIVATIONS)
    t.add_argument("--blocks", type=int, default=10, help="number of invertible blocks")
    t.add_argument("--depth", type=int, default=3)
    t.add_argument("--growth", type=int, default=16)
    t.add_argument("--no-lc", action="store_true", help="fixed concatenation weights")
    t.add_argument("--iters", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=500)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lc-hold", type=int, default=None,
                   help="iterations the concatenation is held (default: half of --iters, at most the authors' 25,000)")
    t.add_argument("--eval-every", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_runs("toy"))

    s = sub.add_parser("signal", help="signal preservation of the activations (paper Table 5 / 8)",
                       description="Signal preservation of activations (paper Table 5 / 8).")
    s.add_argument("--dims", type=int, nargs="+", default=[1, 128, 1024], help="input dimensions D")
    s.add_argument("--pairs", type=int, default=100_000, help="sample pairs per dimension")
    s.add_argument("--std", type=float, default=1.0, help="standard deviation of v, w (5 for Table 8)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_runs("signal"))

    r = sub.add_parser("reproduce", help="the paper's toy results (Table 1, Figure 3), one Ray task per run",
                       description="The paper's toy results (Table 1, Figure 3), one Ray task per run.")
    r.add_argument("what", choices=["toy"], help="which result to reproduce")
    r.add_argument("--iters", type=int, default=1000, help="iterations per run (default 1000; the paper's 50,000)")
    r.add_argument("--data", default=None, help="comma-separated toy data sets (default circles,checkerboard,moons)")
    r.add_argument("--models", default=None, help="comma-separated models of studies/reproduce-toy.yaml (default all)")
    r.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    r.add_argument("--out", default="reproduce-toy", help="folder for the CSV and the figure")
    r.add_argument("--address", default=None, help="Ray cluster address (default RAY_ADDRESS, else local)")
    r.set_defaults(func=_runs("reproduce"))

    c = sub.add_parser("scaling", help="budget-matched sweeps at several budgets: best score against parameters per family",
                       description="Budget-matched sweeps at several budgets.")
    c.add_argument("--space", required=True,
                   help="a space file or shipped name (a numeric budget needs a reference config as its budget:)")
    c.add_argument("--budgets", default=None,
                   help="comma-separated parameter counts or preset names (default: the space's budgets:)")
    c.add_argument("--trials", type=int, default=6, help="trials per budget, baselines included (default 6)")
    c.add_argument("--epochs", type=int, default=None)
    c.add_argument("--storage", default="ray_results")
    c.add_argument("--name", default=None)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--train", action="append", default=[], type=key_value, metavar="KEY=VALUE")
    c.add_argument("--address", default=None)
    c.add_argument("--confirm-seeds", type=int, default=3,
                   help="confirm each budget's best configuration against the reference with this many seeds "
                        "(default 3; 0: no confirmation)")
    c.add_argument("--check", action="store_true", help="check every budget's space and print the plan; train nothing")
    c.set_defaults(func=_runs("scaling"))

    e = sub.add_parser("eta", help="heatmaps of the learned concatenation weights of a checkpoint (paper Fig. 10)",
                       description="Heatmaps of the learned concatenation weights of a checkpoint (paper Fig. 10).")
    e.add_argument("checkpoint", help="a checkpoint folder (path or URI) of a sweep trial or a full run")
    e.add_argument("--out", default=".", help="folder for eta.png and eta.csv (default: here)")
    e.set_defaults(func=_runs("eta"))
