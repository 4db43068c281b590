"""``idensenet``: the single command-line entry point (argparse subcommands).

Heavy imports (torch, Ray, pandas) happen inside the commands, so ``idensenet --help`` stays fast.
Bad input, argparse's own complaints included, ends with one line per problem on stderr and exit code 2;
every sub-command (the studies' and the space commands too) is on this one parser and follows that rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import signal
import sys
from typing import Any, NoReturn, Sequence

from model.config import ModelConfig
from model.errors import UserError

PROG = "idensenet"
EXIT_USER_ERROR = 2
# subcommands implemented by a module's main(argv)
PASSTHROUGH = {  # the benchmark keeps its own arguments (it is a script of bench/, not a study)
    "bench": ("bench.run", "step time, memory and counter speed (JSON)"),
}
DEMO = dict(space="demo-moons", trials=6, confirm_top=1, confirm_seeds=3)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def _number(kind: type, low: float, strict: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if strict else '>='} {low:g} ({what})")
        return value

    return parse


POSITIVE = _number(int, 1, False, "at least one")
NONNEGATIVE = _number(int, 0, False, "zero or more")
POSITIVE_FLOAT = _number(float, 0, True, "a positive amount")
REDUCTION = _number(float, 1, True, "ASHA keeps 1/factor of the trials at each rung")


def key_value(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    k, v = text.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML") from None


def _placement_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL); default CPU (gloo)")
    p.add_argument("--cpus-per-worker", type=POSITIVE_FLOAT, default=None,
                   help="CPUs per worker (default: on GPUs the GPU node's CPUs per GPU; on CPUs 0.99)")
    p.add_argument("--address", default=None, help="Ray cluster address (default RAY_ADDRESS, else a local instance)")
    p.add_argument("--cluster-config", default=None,
                   help="the cluster launcher's config, to size the sweep by what the autoscaler can add "
                        "(default ~/ray_bootstrap_config.yaml where `ray up` puts it on the head)")
    p.add_argument("--shared-storage", action="store_true",
                   help="the local --storage folder is mounted at the same path on every node (NFS)")
    p.add_argument("--batch-size", type=POSITIVE, default=None, help="global batch size (split over workers)")
    p.add_argument("--data-root", default=None, help="folder holding the image data sets")
    p.add_argument("--train", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="override a train config value (e.g. steps_per_epoch=20); repeatable")
    p.add_argument("--verbose", action="store_true", help="show Ray's worker logs")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Budget-matched i-DenseNet sweeps on Ray Tune + Optuna.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("sweep", help="run (or --resume) a sweep; without options: the embedded demo")
    p.add_argument("--space", default=None, help="a space YAML file or a shipped space name (default demo-moons)")
    p.add_argument("--trials", type=POSITIVE, default=None,
                   help="number of trials, baselines and enqueued ones included (default 6)")
    p.add_argument("--workers-per-trial", type=POSITIVE, default=1, help="Ray Train workers per trial (DDP)")
    p.add_argument("--epochs", type=POSITIVE, default=None, help="epochs per trial (default: the space's)")
    p.add_argument("--storage", default="ray_results", help="folder or URI for experiments (default ./ray_results)")
    p.add_argument("--name", default=None, help="experiment name (default <space>-<timestamp>)")
    p.add_argument("--grace-period", type=POSITIVE, default=None,
                   help="ASHA: epochs before a trial can be stopped (default: the space's, else ceil(epochs/η²))")
    p.add_argument("--reduction-factor", type=REDUCTION, default=None, help="ASHA reduction factor η (default 3)")
    p.add_argument("--brackets", type=POSITIVE, default=1,
                   help="ASHA brackets (more than 1: asynchronous Hyperband; default 1)")
    p.add_argument("--scheduler", choices=("asha", "none"), default="asha",
                   help="asha (default) or none: every trial runs to its last epoch")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler (default tpe)")
    p.add_argument("--startup-trials", dest="n_startup_trials", type=NONNEGATIVE, default=None, metavar="N",
                   help="TPE's random start, enqueued trials included (default: a third of the searched trials, "
                        "2 to 10, plus the enqueued)")
    p.add_argument("--max-concurrent", type=POSITIVE, default=None, help="cap on trials at once (default: what fits)")
    p.add_argument("--seed", type=NONNEGATIVE, default=0, help="TPE and training seed")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--resume-if-exists", action="store_true",
                   help="continue the sweep --name when its experiment exists, else start it (a batch job that "
                        "may run again: it waits for a driver lease that is going stale)")
    p.add_argument("--smoke-test", action="store_true", help="2 epochs of 5 steps, small test set")
    p.add_argument("--enqueue", default=None, metavar="FILE",
                   help="run these configurations first: a best.yaml, or a YAML list of {label, model, train}")
    p.add_argument("--time-budget", dest="time_budget_s", type=POSITIVE_FLOAT, default=None, metavar="SECONDS",
                   help="stop the sweep after this many seconds")
    p.add_argument("--confirm-seeds", type=NONNEGATIVE, default=0, metavar="S",
                   help="after the sweep, retrain the --confirm-top configurations and the reference Residual "
                        "Flow with S seeds each and state the verdict with its interval (default 0: no; the demo: 3)")
    p.add_argument("--confirm-top", type=POSITIVE, default=1, metavar="K",
                   help="how many of the best searched configurations --confirm-seeds retrains (default 1)")
    p.add_argument("--max-failures", dest="worker_max_failures", type=NONNEGATIVE, default=1, metavar="N",
                   help="Train: worker-group restarts per trial, from the latest checkpoint (default 1)")
    p.add_argument("--trial-retries", dest="trial_max_failures", type=NONNEGATIVE, default=1, metavar="N",
                   help="Tune: reruns of a failed trial driver (default 1)")
    _placement_args(p)
    p.add_argument("--inject-nan-trials", type=NONNEGATIVE, nargs="*", default=[], help=argparse.SUPPRESS)
    # tests: these trials raise at their second epoch while the file --inject-error-while names exists
    p.add_argument("--inject-error-trials", type=NONNEGATIVE, nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("--inject-error-while", default=None, help=argparse.SUPPRESS)
    # tests: every checkpoint carries this many MiB more (so that a kill can land mid-upload)
    p.add_argument("--inject-checkpoint-mb", type=NONNEGATIVE, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cpu-if-no-cuda", action="store_true", help=argparse.SUPPRESS)  # tests on fake GPUs
    sub.add_parser("demo", help="the embedded default: a budget-matched search on two moons, local Ray, CPU")
    r = sub.add_parser("results", help="table (CSV + Parquet beside the experiment) and score plot")
    r.set_defaults(func=cmd_results)
    r.add_argument("experiment", metavar="NAME_OR_PATH")
    r.add_argument("--storage", default="ray_results")
    r.add_argument("--plots", action="store_true",
                   help="also Optuna's views: importance (at equal fidelity), parallel coordinates, scores by family")
    b = sub.add_parser("best", help="write the K best complete run configs as YAML")
    b.set_defaults(func=cmd_best)
    b.add_argument("experiment", metavar="NAME_OR_PATH")
    b.add_argument("--top", type=POSITIVE, default=1)
    b.add_argument("--out", default="best.yaml")
    b.add_argument("--storage", default="ray_results")
    c = sub.add_parser("confirm", help="retrain the best configurations and the reference Residual Flow with seeds: "
                                       "the verdict with its 95%% interval")
    c.set_defaults(func=cmd_confirm)
    c.add_argument("experiment", metavar="NAME_OR_PATH")
    c.add_argument("--top", type=POSITIVE, default=1, help="the K best searched configurations on validation (default 1)")
    c.add_argument("--seeds", type=POSITIVE, default=3, help="seeds per configuration, at least 2 (default 3)")
    c.add_argument("--storage", default="ray_results")
    c.add_argument("--max-concurrent", type=POSITIVE, default=None, help="runs at once (default: as the sweep ran)")
    c.add_argument("--address", default=None, help="Ray cluster address (default RAY_ADDRESS, else a local instance)")
    c.add_argument("--verbose", action="store_true", help="show Ray's worker logs")
    t = sub.add_parser("train", help="train one config (from best.yaml) as a resumable full run")
    t.set_defaults(func=cmd_train)
    t.add_argument("--config", required=True, help="a best.yaml (or a {model:, train:} YAML)")
    t.add_argument("--rank", type=POSITIVE, default=1, help="which entry of best.yaml (1 = best)")
    t.add_argument("--epochs", type=POSITIVE, default=None)
    t.add_argument("--workers", type=POSITIVE, default=1)
    t.add_argument("--storage", default="ray_results")
    t.add_argument("--name", default=None, help="run name (default: derived from the config; rerun = resume)")
    t.add_argument("--max-failures", type=NONNEGATIVE, default=3, help="worker-group restarts from the latest checkpoint")
    _placement_args(t)
    for name, (_, text) in PASSTHROUGH.items():
        sub.add_parser(name, help=text, add_help=False)
    from replay.cli import register as register_replay
    from search_spaces.cli import register as register_space_commands
    from studies.cli import register as register_studies

    register_space_commands(sub)
    register_studies(sub, key_value)
    register_replay(sub)
    return parser


def options(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """``cls`` (a dataclass of a command's options) from the parsed arguments of the same names."""
    names = {f.name for f in dataclasses.fields(cls)} - set(given)
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **given)


def cmd_sweep(args: argparse.Namespace | None) -> int:
    from .report import summarise_sweep
    from .sweep import SweepOptions, run_sweep

    if args is None:
        print(f"idensenet demo: space {DEMO['space']}, {DEMO['trials']} trials, local Ray, CPU", flush=True)
        opts = SweepOptions(**DEMO)
    else:
        opts = options(SweepOptions, args, space=args.space or DEMO["space"], train_overrides=dict(args.train),
                       trials=DEMO["trials"] if args.trials is None else args.trials)
    outcome = run_sweep(opts)
    code = summarise_sweep(outcome)
    if opts.confirm_seeds and code == 0:
        from .confirm import ConfirmOptions, run_confirmation

        print(flush=True)
        return run_confirmation(ConfirmOptions(experiment=outcome.experiment, storage=opts.storage,
                                               top=opts.confirm_top, seeds=opts.confirm_seeds,
                                               max_concurrent=opts.max_concurrent, address=opts.address,
                                               verbose=opts.verbose))
    return code


def cmd_confirm(args: argparse.Namespace) -> int:
    from .confirm import ConfirmOptions, run_confirmation

    return run_confirmation(options(ConfirmOptions, args))


def cmd_best(args: argparse.Namespace) -> int:
    from .records import resolve_experiment
    from .report import write_best

    doc = write_best(resolve_experiment(args.experiment, args.storage), args.top, args.out)
    for e in doc["configs"]:
        m = ModelConfig.from_dict(e["run"]["model"])
        print(f"#{e['rank']} trial {e['trial_id']} ({e['role']}): validation {e['val_score']:.4f}, test "
              f"{e['test_score']:.4f} {e['unit']} (epoch {e['best_epoch']}), {m.describe()} {m.activation}, "
              f"{e['param_count']:,} parameters")
    print(f"wrote {args.out}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """A sweep's table and figures; for a scaling study's folder, its table across budgets."""
    from studies.scaling import SCALING_FILE, print_scaling, write_scaling_outputs

    from .records import experiment_candidates, resolve_experiment
    from .report import show_results

    for c in experiment_candidates(args.experiment, args.storage):
        if c.join(SCALING_FILE).is_file():
            print_scaling(*write_scaling_outputs(c))
            return 0
    return show_results(resolve_experiment(args.experiment, args.storage), args.plots)


def cmd_train(args: argparse.Namespace) -> int:
    from .full_run import TrainOptions, run_full

    return run_full(options(TrainOptions, args, train_overrides=dict(args.train)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # started with `&` by a script (the Slurm job)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # whose SIGINT must stop a sweep cleanly
    try:
        if argv and argv[0] in PASSTHROUGH:
            return int(importlib.import_module(PASSTHROUGH[argv[0]][0]).main(argv[1:]) or 0)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help, or a one-line usage error already printed
            return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USER_ERROR
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "sweep":
            demo = all(a in ("--verbose",) for a in argv[1:])  # no options: the embedded default
            return cmd_sweep(None if demo else args)
        if args.command == "demo":
            return cmd_sweep(None)
        return int(args.func(args) or 0)  # results, best, train, the space commands and the studies
    except UserError as err:
        for line in err.lines():  # one line per problem (a space file may have several)
            print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
