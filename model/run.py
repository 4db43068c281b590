"""One training run's pieces, without Ray: set up, initialise, train an epoch, score it.

The Ray Train worker (:mod:`sweeper.worker`) wraps these with its context, checkpoints and reports;
:func:`epochs` strings them together in one process (the learning-curve recorder of :mod:`replay`), so
both train and score a configuration with the same code. An epoch's scores are those of the EMA
weights: the validation score (what every decision reads) and the test score (what is reported).
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from .data import default_loader_workers, make_loaders, set_epoch
from .flow import Flow, build_model
from .iresblock import InvertibleResBlock
from .run_config import RunConfig
from .train_step import TrainStep, all_reduce_sum, evaluate, model_input


def derived_seed(*parts: Any) -> int:
    """A seed derived from ``parts`` (the same on every rank and every run of the same parts)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def share_roulette(model: Flow, seed: int) -> torch.Generator:
    """One Russian-roulette generator for every block, seeded alike on every rank."""
    gen = torch.Generator().manual_seed(derived_seed(seed, "roulette"))
    for block in model.modules():
        if isinstance(block, InvertibleResBlock):
            block.roulette_generator = gen
    return gen


@dataclass
class Run:
    """What one worker's training holds: the run config, this rank's place, the model and its step."""

    run: RunConfig
    rank: int
    world: int
    device: torch.device
    model: Flow
    step: TrainStep
    loaders: Any
    roulette: torch.Generator
    first_step_at: float | None = None  # wall-clock time (time.time()) the first step of this process ended

    @property
    def test_cap(self) -> int | None:
        """This rank's share of an image test set capped by ``test_size`` (None: the whole set)."""
        t = self.run.train
        return -(-t.test_size // self.world) if (t.test_size and not self.run.model.is_toy) else None


def set_up(run: RunConfig, rank: int = 0, world: int = 1, device: torch.device | None = None,
           reserved_cpus: float | None = None) -> Run:
    """The flow with identical initial weights on every rank, the shared roulette generator, this
    rank's loaders (``loader_workers: null`` sized from ``reserved_cpus``, the CPUs this process
    reserves; pinned memory on a GPU) and the step."""
    m, t = run.model, run.train
    device = device or torch.device("cpu")
    torch.manual_seed(t.seed)  # identical initial weights (and spectral-norm vectors) on every rank
    model = build_model(m).to(device)
    roulette = share_roulette(model, t.seed)
    on_gpu = device.type == "cuda"
    workers = t.loader_workers if t.loader_workers is not None else default_loader_workers(t.data, reserved_cpus, on_gpu)
    loaders = make_loaders(
        t.data, t.data_root, t.batch_size, t.test_batch_size, rank, world, seed=t.seed,
        num_workers=workers, pin_memory=on_gpu and workers > 0, toy_batches_per_epoch=t.steps_per_epoch or 100,
        **({"toy_test_size": t.test_size} if m.is_toy and t.test_size else {}),
    )
    return Run(run, rank, world, device, model, TrainStep(model, t), loaders, roulette)


def initialise(r: Run) -> None:
    """A new run: this rank's RNG streams seeded, ActNorm initialised from the first batch."""
    seed = derived_seed(r.run.train.seed, r.rank)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    set_epoch(r.loaders, 0)
    xb, _ = next(iter(r.loaders.train))
    r.model.initialize(model_input(xb, r.model, r.device))


def train_epoch(r: Run, epoch: int) -> tuple[dict[str, Any], bool]:
    """One epoch of steps (the image step cap, ``steps_per_epoch``, honoured; the concatenation's
    weights held while the family says so); (its part of the report: mean train loss over every rank,
    iterations, last lr and gradient norm; whether every step stayed finite)."""
    m, t = r.run.model, r.run.train
    set_epoch(r.loaders, epoch)
    r.model.train()
    hold = epoch < m.family_spec.hold_concat_epochs(m.arch)
    loss_sum, n_steps, finite, last = 0.0, 0, True, None
    for i, (xb, _) in enumerate(r.loaders.train):
        if t.steps_per_epoch is not None and not m.is_toy and i >= t.steps_per_epoch:
            break
        last = r.step(xb, hold_concat=hold)
        if r.first_step_at is None:
            r.first_step_at = time.time()
        if not last.finite:
            finite = False
            break
        loss_sum += last.loss
        n_steps += 1
    loss_total, steps_total = all_reduce_sum([loss_sum, float(n_steps)], r.device)
    return {
        "epoch": epoch + 1, "train_loss": loss_total / steps_total if steps_total else math.nan,
        "param_count": r.model.num_parameters(), "iterations": r.step.iteration,
        "lr": last.lr if last else t.lr, "grad_norm": last.grad_norm if last else math.nan,
    }, finite


def score(r: Run) -> tuple[float, int, float, int]:
    """(validation score, examples, test score, examples) of the EMA weights, each summed over every
    rank's shard."""
    t = r.run.train
    compiled = t.fused_on(r.device)
    with r.step.ema.swapped_in():
        val, n_val = evaluate(r.model, r.loaders.val, r.device, t.eval_sn_iters, r.test_cap,
                              compiled=compiled)
        test, n_test = evaluate(r.model, r.loaders.test, r.device, t.eval_sn_iters, r.test_cap,
                                refresh_lipschitz=False, compiled=compiled)
    return val, n_val, test, n_test


def epochs(run: RunConfig) -> Iterator[dict[str, Any]]:
    """Train ``run`` in this process, one dict per epoch: ``epoch``, ``val``, ``test``, ``train_loss``,
    ``seconds`` (training and scoring), ``diverged``; stops after the first diverged epoch."""
    r = set_up(run)
    initialise(r)
    for epoch in range(run.train.epochs):
        t0 = time.perf_counter()
        metrics, finite = train_epoch(r, epoch)
        val = test = math.nan
        if finite:
            val, _, test, _ = score(r)
            finite = math.isfinite(val) and math.isfinite(test)
        yield {"epoch": epoch + 1, "val": val if finite else math.nan, "test": test if finite else math.nan,
               "train_loss": metrics["train_loss"], "seconds": time.perf_counter() - t0, "diverged": not finite}
        if not finite:
            return
