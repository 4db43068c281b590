"""How an epoch divides between training and evaluation (issue 27's first measurement).

    python -m bench.epoch_split [--threads 2] [--steps 3] [--eval-batches 2]

An epoch trains, then scores the EMA weights (:func:`model.run.score`): a spectral-norm refresh in
tolerance mode, then the validation and the test set with the evaluation estimator (paper §3: 20
exact series terms plus the Russian roulette, every block). Two cases, on this CPU:

* **digits**: one real epoch of the digits space's i-DenseNet (every searched value at its first
  choice or lower end: depth 2, LipSwish; 1,350 training images in 21 steps of 64, 150 validation and 297 test images in
  batches of 200), through the same :mod:`model.run` functions the sweep's worker calls: its
  training, the refresh and each scored set timed apart.
* **small CIFAR10** (the paper's 4-4-4 i-DenseNet, 8.7 M parameters; :mod:`bench.cases`): an epoch
  of 45,000 training images would take hours here, so its parts are timed on random uint8 images and
  scaled to one: ``--steps`` production training steps at batch 16 (after one warm-up), the refresh,
  and ``--eval-batches`` evaluation batches of 20 images; then seconds per training image × 45,000,
  plus the refresh, plus seconds per scored image × 15,000 (5,000 validation and 10,000 test). The
  per-image costs at batch 16 and 20 stand in for the authors' 64 and 200 (on a GPU larger batches
  are cheaper per image; on this CPU the step's time grows about linearly with the batch).

``--compiled`` is the train config's ``fused: true``: small CIFAR10 trains with fused dense layers
(:mod:`model.fused`, two warm-up steps that compile), and both cases score with every block's g
compiled (:mod:`model.compiled_eval`), after a first scoring pass that compiles (timed apart), then
time eager and compiled scoring alternately, 3 rounds, on the same batches.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

CIFAR_TRAIN, CIFAR_SCORED = 45_000, 15_000  # training images, and validation + test, of a CIFAR10 epoch


def _timed(fn) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _alternate(score, rounds: int = 3) -> dict[str, Any]:  # noqa: ANN001
    """Eager and compiled scoring timed alternately ``rounds`` times: each side's times and the median
    of the per-round ratios eager / compiled."""
    eager, compiled = [], []
    for _ in range(rounds):
        eager.append(_timed(lambda: score(False)))
        compiled.append(_timed(lambda: score(True)))
    ratios = sorted(e / c for e, c in zip(eager, compiled))
    return {"eager_s": eager, "compiled_s": compiled, "median_ratio": ratios[len(ratios) // 2]}


def digits_epoch(compiled: bool = False) -> dict[str, Any]:
    """One real digits epoch, split into training, the refresh and the two scored sets."""
    import optuna

    from model.run import initialise, set_up, train_epoch
    from model.train_step import evaluate
    from search_spaces.suggest import suggest
    from sweeper.settings import load_space_text, space_text

    space = load_space_text(*space_text("digits"), "digits")
    params: dict[str, Any] = {}
    for dim in space.dimensions:  # every dimension at its first choice or its lower end
        first = dim.values()[0] if dim.values() is not None else float(dim.low)
        params.update(dim.params_for(first if dim.kind != "eta" else (first, first)))
    record = suggest(space, optuna.trial.FixedTrial(params))
    run, count = record.with_train(epochs=2, seed=0).run, record.param_count
    r = set_up(run)
    initialise(r)
    train_epoch(r, 0)  # a first epoch warms up the allocator and the lazily built parts
    t = r.run.train
    out: dict[str, Any] = {"params": params, "parameters": count, "compiled": compiled}
    out["train_s"] = _timed(lambda: train_epoch(r, 1))
    with r.step.ema.swapped_in():
        if compiled:  # the first epoch's scoring compiles (and the smaller last batch recompiles once)
            out["compile_s"] = _timed(lambda: [evaluate(r.model, loader, r.device, None, refresh_lipschitz=False,
                                                        compiled=True) for loader in (r.loaders.val, r.loaders.test)])
        out["refresh_s"] = _timed(lambda: r.model.update_lipschitz(t.eval_sn_iters))
        out["val_s"] = _timed(lambda: evaluate(r.model, r.loaders.val, r.device, t.eval_sn_iters,
                                               refresh_lipschitz=False, compiled=compiled))
        out["test_s"] = _timed(lambda: evaluate(r.model, r.loaders.test, r.device, t.eval_sn_iters,
                                                refresh_lipschitz=False, compiled=compiled))
        if compiled:
            out["eager_over_compiled"] = _alternate(lambda c: [
                evaluate(r.model, loader, r.device, None, refresh_lipschitz=False, compiled=c)
                for loader in (r.loaders.val, r.loaders.test)])
    evaluation = out["refresh_s"] + out["val_s"] + out["test_s"]
    out["evaluation_share"] = evaluation / (evaluation + out["train_s"])
    return out


def cifar_small_epoch(steps: int, eval_batches: int, train_batch: int = 16, eval_batch: int = 20,
                      compiled: bool = False) -> dict[str, Any]:
    """The small CIFAR10 model's epoch, scaled from timed steps and evaluation batches."""
    from bench.cases import make_case, train_step
    from model.train_step import evaluate

    case = make_case("cifar_small", torch.device("cpu"), batch=train_batch)
    step = train_step(case, fused=compiled)
    for i in range(2 if compiled else 1):  # warm-up (and, fused, compilation)
        step(case.batch(i))
    step_s = [_timed(lambda i=i: step(case.batch(i + 2))) for i in range(steps)]
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 256, (eval_batch, 3, 32, 32), dtype=torch.uint8, generator=gen), None)
               for _ in range(eval_batches)]
    model = case.model
    refresh_s = _timed(lambda: model.update_lipschitz(None))
    warm_s = _timed(lambda: evaluate(model, batches[:1], torch.device("cpu"), None, refresh_lipschitz=False,
                                     compiled=compiled))  # warm-up (and compilation)
    eval_s = _timed(lambda: evaluate(model, batches, torch.device("cpu"), None, refresh_lipschitz=False,
                                     compiled=compiled))
    compare = _alternate(lambda c: evaluate(model, batches, torch.device("cpu"), None, refresh_lipschitz=False,
                                            compiled=c)) if compiled else None
    per_train = sorted(step_s)[len(step_s) // 2] / train_batch
    per_scored = eval_s / (eval_batch * eval_batches)
    train, evaluation = per_train * CIFAR_TRAIN, refresh_s + per_scored * CIFAR_SCORED
    return {"compiled": compiled, "first_eval_batch_s": warm_s, "step_s": step_s, "train_batch": train_batch, "eval_batch": eval_batch, "eval_s": eval_s,
            "eval_images": eval_batch * eval_batches, "refresh_s": refresh_s,
            "train_s_per_image": per_train, "eval_s_per_image": per_scored,
            "epoch_train_s": train, "epoch_evaluation_s": evaluation, "eager_over_compiled": compare,
            "evaluation_share": evaluation / (evaluation + train)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.epoch_split", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed small-CIFAR10 training steps (default 3)")
    p.add_argument("--eval-batches", type=int, default=2, help="timed small-CIFAR10 evaluation batches of 20")
    p.add_argument("--cases", default="digits,cifar_small")
    p.add_argument("--compiled", action="store_true", help="the train config's fused: true: small CIFAR10 trains "
                   "with fused dense layers (model.fused) and every run scores with each block's g compiled (model.compiled_eval)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"threads": args.threads}
    for case in args.cases.split(","):
        if case == "digits":
            out["digits"] = digits_epoch(args.compiled)
        elif case == "cifar_small":
            out["cifar_small"] = cifar_small_epoch(args.steps, args.eval_batches, compiled=args.compiled)
        else:
            print(f"bench.epoch_split: unknown case {case!r} (digits, cifar_small)", file=sys.stderr)
            return 2
        print(f"{case}: evaluation {100 * out[case]['evaluation_share']:.1f} % of an epoch", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
