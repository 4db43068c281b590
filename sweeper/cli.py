"""``idensenet``: the single command-line entry point (argparse subcommands).

Heavy imports (torch, Ray, pandas) happen inside the command functions, so ``idensenet --help`` and
the non-Ray subcommands never import Ray. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

from .errors import UserError, report_user_error

PROG = "idensenet"
# subcommands implemented by a module's main(argv) (written by other packages)
PASSTHROUGH = {
    "toy": ("model.toy_train", "train a toy 2-D flow without Ray and print its test NLL in nats"),
    "signal": ("model.signal", "signal preservation of the activations (paper Table 5 / 8)"),
    "bench": ("bench.run", "step time, memory and counter speed (JSON)"),
}
DEMO = dict(space="toy-moons", trials=4, epochs=3, batch_size=256,
            train_overrides={"steps_per_epoch": 20, "test_size": 2000})


def _kv(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    k, v = text.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML") from None


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default=None, help="a space YAML file or a shipped space name (default toy-moons)")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default 4)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (DDP)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL); default CPU (gloo)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the space's)")
    p.add_argument("--storage", default="ray_results", help="folder for experiments (default ./ray_results)")
    p.add_argument("--name", default=None, help="experiment name (default <space>-<timestamp>)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA reduction factor")
    p.add_argument("--max-concurrent", type=int, default=None, help="cap on trials at once (default: what fits)")
    p.add_argument("--cpus-per-worker", type=float, default=None, help="CPUs per worker (default 1; 0.99 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="TPE and training seed")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--smoke-test", action="store_true", help="2 epochs of 5 steps, small test set")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (split over workers)")
    p.add_argument("--data-root", default=None, help="folder holding the image data sets")
    p.add_argument("--address", default=None, help="Ray cluster address (default RAY_ADDRESS or a local instance)")
    p.add_argument("--time-budget", type=float, default=None, help="stop the sweep after this many seconds")
    p.add_argument("--train", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="override a train config value (e.g. steps_per_epoch=20); repeatable")
    p.add_argument("--max-failures", type=int, default=1,
                   help="Train: worker-group restarts per trial, from the latest checkpoint (default 1)")
    p.add_argument("--trial-retries", type=int, default=1, help="Tune: reruns of a failed trial driver (default 1)")
    p.add_argument("--verbose", action="store_true", help="show Ray's worker logs")
    p.add_argument("--inject-nan-trials", type=int, nargs="*", default=[], help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Budget-matched i-DenseNet sweeps on Ray Tune + Optuna.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("sweep", help="run (or --resume) a sweep; without options: the embedded demo")
    _add_sweep_args(p)
    sub.add_parser("demo", help="the embedded default: 4 trials on two moons, local Ray, CPU")
    r = sub.add_parser("results", help="table (CSV + Parquet beside the experiment) and score plot")
    r.add_argument("experiment", metavar="NAME_OR_PATH")
    r.add_argument("--storage", default="ray_results")
    b = sub.add_parser("best", help="write the K best complete configs as YAML")
    b.add_argument("experiment", metavar="NAME_OR_PATH")
    b.add_argument("--top", type=int, default=1)
    b.add_argument("--out", default="best.yaml")
    b.add_argument("--storage", default="ray_results")
    t = sub.add_parser("train", help="train one config (from best.yaml) as a resumable full run")
    t.add_argument("--config", required=True, help="a best.yaml (or a {model:, train:} YAML)")
    t.add_argument("--rank", type=int, default=1, help="which entry of best.yaml (1 = best)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--gpu", action="store_true")
    t.add_argument("--storage", default="ray_results")
    t.add_argument("--name", default=None, help="run name (default: derived from the config; rerun = resume)")
    t.add_argument("--cpus-per-worker", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--data-root", default=None)
    t.add_argument("--address", default=None)
    t.add_argument("--max-failures", type=int, default=3, help="worker-group restarts from the latest checkpoint")
    t.add_argument("--train", action="append", type=_kv, default=[], metavar="KEY=VALUE")
    t.add_argument("--verbose", action="store_true")
    for name, (_, text) in PASSTHROUGH.items():
        sub.add_parser(name, help=text, add_help=False)
    try:
        from search_spaces.cli import register
    except ImportError:  # pragma: no cover
        pass
    else:
        register(sub)
    return parser


def _sweep_options(args: argparse.Namespace | None, demo: bool = False):
    from .tuner import SweepOptions

    if args is None or demo:  # the embedded demo
        return SweepOptions(**DEMO, verbose=bool(getattr(args, "verbose", False))), True
    opts = SweepOptions(
        space=args.space or "toy-moons", trials=args.trials or 4, workers_per_trial=args.workers_per_trial,
        gpu=args.gpu, epochs=args.epochs, storage=args.storage, name=args.name, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, max_concurrent=args.max_concurrent,
        cpus_per_worker=args.cpus_per_worker, seed=args.seed, resume=args.resume, smoke_test=args.smoke_test,
        batch_size=args.batch_size, data_root=args.data_root, address=args.address,
        time_budget_s=args.time_budget, train_overrides=dict(args.train), verbose=args.verbose,
        worker_max_failures=args.max_failures, trial_max_failures=args.trial_retries,
        inject_nan_trials=list(args.inject_nan_trials),
    )
    return opts, False


def cmd_sweep(args: argparse.Namespace | None, demo: bool = False) -> int:
    from .summary import summarise_sweep
    from .tuner import run_sweep

    opts, demo = _sweep_options(args, demo)
    if demo:
        print("idensenet demo: 4 trials on two moons (space toy-moons), local Ray, CPU", flush=True)
    outcome = run_sweep(opts)
    return summarise_sweep(outcome, opts)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        name = PASSTHROUGH[argv[0]][0]
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                return report_user_error(PROG, UserError(f"'{argv[0]}' is not available ({name} is not installed)"))
            raise
        return int(module.main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "sweep":
            demo = all(a in ("--verbose",) for a in argv[1:])  # no options: the embedded default
            return cmd_sweep(args, demo)
        if args.command == "demo":
            return cmd_sweep(None)
        if args.command == "results":
            from .results import cmd_results

            return cmd_results(args.experiment, args.storage)
        if args.command == "best":
            return _cmd_best(args)
        if args.command == "train":
            from .full_run import TrainOptions, run_full

            return run_full(TrainOptions(
                config=args.config, rank=args.rank, epochs=args.epochs, workers=args.workers, gpu=args.gpu,
                storage=args.storage, name=args.name, cpus_per_worker=args.cpus_per_worker,
                data_root=args.data_root, batch_size=args.batch_size, address=args.address,
                max_failures=args.max_failures, train_overrides=dict(args.train), verbose=args.verbose))
        return int(args.func(args) or 0)
    except UserError as err:
        return report_user_error(PROG, err)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _cmd_best(args: argparse.Namespace) -> int:
    from .best import write_best
    from .results import resolve_experiment

    doc = write_best(resolve_experiment(args.experiment, args.storage), args.top, args.out)
    for e in doc["configs"]:
        m = e["model"]
        print(f"#{e['rank']} trial {e['trial_id']}: {e['metric']} {e['score']:.4f} (epoch {e['best_epoch']}), "
              f"depth {m['depth']} growth {m['growth']} {m['activation']}, {e['param_count']:,} parameters")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
