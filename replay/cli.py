"""``idensenet replay``: record a learning-curve table, compare search methods on it, and place real
sweeps against the replay's band (:mod:`replay.curves`, :mod:`replay.compare`)."""

from __future__ import annotations

import argparse
import os
from importlib import resources
from typing import Any

from model.errors import UserError

DEFAULT_TABLE = "demo-moons.parquet"


def shipped_table() -> str:
    """The committed table of the demo space (16 epochs of 20 steps)."""
    return str(resources.files("replay") / "tables" / DEFAULT_TABLE)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return values


def register(sub: Any) -> None:
    """Add ``replay`` with its sub-commands ``record``, ``compare`` and ``check`` to the subparsers ``sub``."""
    p = sub.add_parser("replay", help="search efficiency: learning curves, replayed searches, real sweeps vs the band",
                       description="Search efficiency as evidence: record learning curves once, replay the "
                                   "sweep's own searcher and scheduler against them many times.")
    rs = p.add_subparsers(dest="replay_command", metavar="STEP", required=True)
    r = rs.add_parser("record", help="record (or extend: resumable) a learning-curve table")
    r.add_argument("--space", default="demo-moons", help="a shipped space name or a space file (default demo-moons)")
    r.add_argument("--epochs", type=int, default=16, help="epochs per run (default 16)")
    r.add_argument("--steps-per-epoch", type=int, default=20, help="steps per epoch (default 20)")
    r.add_argument("--points", type=int, default=6, help="grid points per continuous dimension (default 6)")
    r.add_argument("--seeds", type=_ints, default=(1, 2, 3), help="training seeds (default 1,2,3)")
    r.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)), help="runs at once, one thread each")
    r.add_argument("--limit", type=int, default=None, help="record at most this many runs now")
    r.add_argument("--out", default=None, help=f"the table (default: the shipped replay/tables/{DEFAULT_TABLE})")
    r.set_defaults(func=cmd_record)

    c = rs.add_parser("compare", help="replay every arm many times against a table; print the comparison")
    c.add_argument("--table", default=None, help="a recorded table (default: the shipped demo-moons table)")
    c.add_argument("--trials", type=_ints, default=(32, 96), help="trial counts (default 32,96)")
    c.add_argument("--replays", type=int, default=50, help="replays per arm and trial count (default 50)")
    c.add_argument("--workers", type=int, default=4, help="trials at once, W (default 4)")
    c.add_argument("--start-cost", type=float, default=None,
                   help="seconds a trial spends before its first epoch (default: measured, see docs/search-efficiency.md)")
    c.add_argument("--arms", default="all", help="'all', or comma-separated arm numbers of `replay compare --list`")
    c.add_argument("--list", action="store_true", help="list the arms and exit")
    c.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)), help="replays at once")
    c.add_argument("--out", default="replay_results", help="folder for summary.csv, replays.json and the PNG")
    c.set_defaults(func=cmd_compare)

    k = rs.add_parser("check", help="place real sweeps' picks against the replay's band")
    k.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="sweeps of the table's space (paths)")
    k.add_argument("--table", default=None)
    k.add_argument("--replays", default="replay_results/replays.json", help="a compare run's replays.json")
    k.add_argument("--arm", default=None, help="the replayed arm to compare with (default: the shipped default's)")
    k.add_argument("--logs", nargs="*", default=[], metavar="LOG",
                   help="the sweeps' printed output (one file per experiment): also measure each trial's start-up")
    k.set_defaults(func=cmd_check)

    w = rs.add_parser("space", help="print the table's space (its schedule included) for a real sweep to run")
    w.add_argument("--table", default=None)
    w.set_defaults(func=cmd_space)


def cmd_space(args: argparse.Namespace) -> int:
    import yaml

    from .curves import read_table

    _, spec = read_table(args.table or shipped_table())
    data = yaml.safe_load(spec.space_yaml)
    data["train"] = {**(data.get("train") or {}), **spec.train}
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from .curves import record, table_spec

    out = args.out or shipped_table()
    spec = table_spec(args.space, {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch},
                      args.points, args.seeds)
    if args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    record(spec, out, jobs=args.jobs, limit=args.limit)
    return 0


def _arms(text: str):  # noqa: ANN202
    from .compare import ARMS

    if text == "all":
        return ARMS
    try:
        picked = tuple(ARMS[int(i)] for i in text.split(","))
    except (ValueError, IndexError):
        raise UserError(f"--arms: expected 'all' or numbers 0 to {len(ARMS) - 1}, got {text!r}") from None
    return picked if ARMS[0] in picked else (ARMS[0], *picked)  # random search is every speed-up's reference


def cmd_compare(args: argparse.Namespace) -> int:
    from figures.replay import anytime_regret

    from .compare import ARMS, figure_curves, markdown, run_replays, save, summarise
    from .curves import read_table
    from .simulate import START_COST_S, Lookup

    if args.list:
        for i, arm in enumerate(ARMS):
            print(f"{i}: {arm.name}")
        return 0
    table = args.table or shipped_table()
    lookup = Lookup(*read_table(table))
    start = START_COST_S if args.start_cost is None else args.start_cost
    arms = _arms(args.arms)
    print(f"{len(arms)} arms x trials {','.join(map(str, args.trials))} x {args.replays} replays, W={args.workers}, "
          f"start-up {start:g} s per trial, table {table} ({len(lookup.configs)} configurations, "
          f"seeds {lookup.seeds}, {lookup.epochs} epochs)", flush=True)
    results = run_replays(table, arms, args.trials, args.replays, args.workers, start, args.jobs)
    df = summarise(results, lookup.epochs)
    meta = {"table": table, "workers": args.workers, "start_cost": start, "replays": args.replays,
            "arms": [a.__dict__ for a in arms]}
    save(results, df, meta, args.out)
    png = os.path.join(args.out, "anytime_regret.png")
    anytime_regret(figure_curves(results, lookup.epochs), png, args.workers)
    print(markdown(df, args.workers))
    print(f"wrote {args.out}/summary.csv, replays.json, anytime_regret.png")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from sweeper.metrics import DIVERGED, VAL
    from sweeper.records import trial_records
    from sweeper.settings import SweepSettings
    from sweeper.storage import locate

    from .compare import DEFAULT
    from .curves import read_table
    from .simulate import Lookup

    lookup = Lookup(*read_table(args.table or shipped_table()))
    try:
        with open(args.replays) as f:
            saved = json.load(f)
    except OSError as err:
        raise UserError(f"--replays: {err}") from None
    arm = args.arm or DEFAULT
    workers = saved["meta"]["workers"]
    if args.logs and len(args.logs) != len(args.experiments):
        raise UserError(f"--logs: {len(args.logs)} file(s) for {len(args.experiments)} experiment(s)")
    for i, exp_ref in enumerate(args.experiments):
        exp = locate(exp_ref)
        settings = SweepSettings.load(exp)
        scored = []
        for rec in trial_records(exp):
            if any(row.get(DIVERGED) for row in rec["epochs"]):
                continue  # as `best`: a diverged trial is never the pick
            vals = [row.get(VAL) for row in rec["epochs"] if row.get(VAL) is not None]
            vals = [float(v) for v in vals if np.isfinite(float(v))]
            if vals:
                scored.append((min(vals), rec["trial_id"], rec["config"]))
        if not scored:
            raise UserError(f"{exp.uri}: no scored trial")
        _, tid, config = min(scored, key=lambda s: (s[0], s[1]))
        c = lookup.nearest(lookup.params_of(config))
        regret = lookup.regret[c]
        mine = [t for t in saved["traces"] if t["arm"] == arm and t["trials"] == settings.trials]
        if not mine:
            raise UserError(f"{args.replays} has no replays of {arm!r} with {settings.trials} trials")
        finals = np.array([tr["regret"][-1] for tr in mine[0]["replays"]])
        lo, hi = np.percentile(finals, [5, 95])
        rank = float(np.mean(finals <= regret + 1e-12)) * 100
        print(f"{exp.uri}: pick {tid} -> table configuration {c}, regret {regret:.4f} nats; replay band "
              f"(5-95 %, {arm}, {settings.trials} trials, W={workers}) {lo:.4f} to {hi:.4f}: "
              f"{'inside' if lo - 1e-12 <= regret <= hi + 1e-12 else 'OUTSIDE'} (at the {rank:.0f}th percentile)")
        if args.logs:
            from .overhead import median_overhead

            try:
                with open(args.logs[i], encoding="utf-8", errors="replace") as f:
                    start, end, n = median_overhead(f.readlines())
            except OSError as err:
                raise UserError(f"--logs: {err}") from None
            print(f"  per-trial overhead over {n} trials (medians): start-up {start:.1f} s, wind-down {end:.1f} s")
    return 0
