"""Train a toy 2-D flow (paper §4.1) and report its test NLL in nats; pure PyTorch, no Ray.

The authors' toy recipe (``train_toy.py``): a fresh batch every iteration, Adam at 1e-3 without
warm-up, clipping or EMA, the learnable concatenation held at its initialisation for the first
iterations, ``sn_train_iters`` power iterations after each step. Evaluation as theirs: 200 power
iterations, eval mode (the exact 2-D log-determinant), −mean log p on 10,000 fresh samples.

The authors hold the concatenation for 25,000 of their 50,000 iterations; :func:`default_lc_hold`
keeps that half (capped at 25,000) for shorter runs, so a short run still learns the concatenation
in its second half. (:func:`model.config.toy_config` itself has ``lc_start_epoch=0``: the sweeps
count the hold in epochs.)
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from model.config import ModelConfig, toy_config
from model.data import TOY_IDENTITY_NLL, toy_sample
from model.errors import UserError
from model.flow import Flow, build_model
from model.train_config import TrainConfig
from model.train_step import TrainStep, evaluate

AUTHORS_LC_HOLD = 25_000  # train_toy.py --start_learnable_concat, in iterations
N_TEST = 10_000
EVAL_SN_ITERS = 200


@dataclass
class ToyResult:
    test_nll: float
    iterations: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (iteration, test NLL)


def default_lc_hold(iterations: int) -> int:
    """Iterations the concatenation is held: the authors' 25,000 of 50,000, i.e. half, at most 25,000."""
    return min(AUTHORS_LC_HOLD, iterations // 2)


def evaluate_toy(model: Flow, data: str, n: int, rng: np.random.Generator) -> float:
    """Mean −log p(x) in nats over ``n`` fresh samples, with the exact 2-D log-determinant."""
    x = toy_sample(data, n, rng)
    chunks = [(c, None) for c in x.split(2500)]
    nll, _ = evaluate(model, chunks, next(model.parameters()).device, EVAL_SN_ITERS)
    return nll


def train_toy(
    config: ModelConfig,
    data: str = "moons",
    iterations: int = 1000,
    batch_size: int = 500,
    lr: float = 1e-3,
    lc_hold: int = 0,
    eval_every: int = 0,
    n_test: int = N_TEST,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[Flow, ToyResult]:
    """Train ``config`` on toy ``data`` (``lc_hold`` iterations with the concatenation held) and
    return the model and its final test NLL; ``eval_every`` > 0 also scores along the way."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    test_rng = np.random.default_rng(seed + 10_000)
    model = build_model(config)
    model.train()
    step = TrainStep(model, TrainConfig(data=data, batch_size=batch_size, lr=lr, seed=seed))
    history: list[tuple[int, float]] = []
    start = time.perf_counter()
    for itr in range(iterations):
        result = step(toy_sample(data, batch_size, rng), hold_concat=itr < lc_hold)
        if not result.finite:
            if log:
                log(f"iter {itr + 1}: non-finite loss, stopped")
            history.append((itr + 1, math.nan))
            return model, ToyResult(math.nan, itr + 1, time.perf_counter() - start, history)
        if eval_every and (itr + 1) % eval_every == 0 and itr + 1 < iterations:
            nll = evaluate_toy(model, data, n_test, test_rng)
            history.append((itr + 1, nll))
            if log:
                log(f"iter {itr + 1:6d}  train {result.loss:.3f}  test NLL {nll:.3f} nats")
    nll = evaluate_toy(model, data, n_test, test_rng)
    history.append((iterations, nll))
    return model, ToyResult(nll, iterations, time.perf_counter() - start, history)


def run(args: argparse.Namespace) -> int:
    """``idensenet toy`` (its arguments: :mod:`studies.cli`)."""
    for name in ("blocks", "iters", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError([(f"--{name.replace('_', '-')}", f"{getattr(args, name)} must be >= 1")])
    if args.lr <= 0 or args.eval_every < 0 or (args.lc_hold or 0) < 0:
        raise UserError("--lr must be > 0, --eval-every and --lc-hold >= 0")
    cfg = toy_config(
        family=args.family, activation=args.activation, blocks_per_scale=(args.blocks,),
        depth=args.depth, growth=args.growth, learnable_concat=not args.no_lc,
    )
    hold = default_lc_hold(args.iters) if args.lc_hold is None else args.lc_hold
    print(f"{args.family} on {args.data}: {build_model(cfg).num_parameters():,} parameters, "
          f"{args.iters} iterations of batch {args.batch_size}, concatenation held {hold}", flush=True)
    _, result = train_toy(
        cfg, args.data, args.iters, args.batch_size, args.lr, hold,
        args.eval_every, seed=args.seed, log=lambda s: print(s, flush=True),
    )
    print(f"test NLL {result.test_nll:.4f} nats on {N_TEST:,} fresh samples "
          + (f"(identity flow {TOY_IDENTITY_NLL[args.data]:.3f}; " if args.data in TOY_IDENTITY_NLL else "(")
          + f"{result.seconds:.1f} s)")
    return 0 if math.isfinite(result.test_nll) else 1

