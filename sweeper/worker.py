"""The loop every Ray Train worker runs: a thin adapter between Ray and :class:`model.train_step.TrainStep`.

What it adds to the step: Ray's context (rank, world size, device), resuming from
``ray.train.get_checkpoint()``, one ``ray.train.report`` per epoch on every rank with a checkpoint
(see :mod:`sweeper.checkpoint`), and a return value (rank 0's summary, ``Result.return_value``).

``config`` (the Train loop config): ``run`` (a :class:`model.run_config.RunConfig` dict), ``device``
("cpu" or "cuda"), and optionally ``cpu_if_no_cuda`` (tests on fake GPUs), ``inject_nan_at_epoch``
(tests: the weights become NaN at the start of that 1-based epoch), ``inject_error_at_epoch`` with
``inject_error_while`` (tests: raise at the start of that epoch while that file exists) and
``tensorboard_dir``.

DDP averages gradients over the workers, so W workers with B/W each follow the update of one
process with batch B; every rank draws the same Russian-roulette lengths (one generator seeded
alike everywhere: the authors' one draw per minibatch and block), and each rank its own probes and
dequantisation noise. Each epoch's report (keys in :mod:`sweeper.metrics`): the validation and the
test score with the EMA weights (each summed over every worker's shard), and ``param_crc``, a
checksum of this rank's parameters.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from tensorboardX import SummaryWriter
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.data import make_loaders, set_epoch
from model.errors import UserError
from model.families import import_modules
from model.flow import Flow, build_model
from model.iresblock import InvertibleResBlock
from model.run_config import RunConfig
from model.train_step import TrainStep, all_reduce_sum, distributed, evaluate, model_input

from .checkpoint import capture_rng, load_rng, load_state, restore_rng, save_checkpoint
from .metrics import BEST_VAL, DIVERGED, TEST, VAL


def choose_device(request: str, cpu_if_no_cuda: bool = False) -> torch.device:
    """The worker's device; a GPU asked for where CUDA is unusable is an error naming this node."""
    if request != "cuda":
        return torch.device("cpu")
    if torch.cuda.is_available():
        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        return device
    if cpu_if_no_cuda:
        return torch.device("cpu")
    raise UserError(f"node {socket.gethostname()}: --gpu asked for a GPU, but this worker has no usable CUDA "
                    f"device (torch {torch.__version__}, CUDA {torch.version.cuda}, "
                    f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}, "
                    f"{torch.cuda.device_count()} device(s) visible)")


def _seed(*parts: Any) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def param_crc(model: nn.Module) -> int:
    """CRC-32 of the bytes of every parameter, in order (ranks that agree bit for bit agree here)."""
    crc = 0
    for p in model.parameters():
        crc = zlib.crc32(p.detach().cpu().contiguous().numpy().tobytes(), crc)
    return crc


def _share_roulette(model: Flow, seed: int) -> torch.Generator:
    gen = torch.Generator().manual_seed(_seed(seed, "roulette"))
    for block in model.modules():
        if isinstance(block, InvertibleResBlock):
            block.roulette_generator = gen
    return gen


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP over the process group (its constructor broadcasts rank 0's parameters and buffers). Every
    parameter that trains takes part in every step, so DDP need not search for unused ones."""
    if not distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@dataclass
class _Run:
    """What one worker's training holds: the run config, this rank's place, the model and its step."""

    run: RunConfig
    rank: int
    world: int
    device: torch.device
    model: Flow
    step: TrainStep
    loaders: Any
    roulette: torch.Generator


def _set_up(config: dict[str, Any], rank: int, world: int) -> _Run:
    """The run config (its family's module imported first), the device, the flow with identical
    initial weights on every rank, the shared Russian-roulette generator, the loaders and the step."""
    import_modules(config.get("family_modules", ()))  # families registered outside model.families
    run = RunConfig.from_dict(config["run"])
    m, t = run.model, run.train
    device = choose_device(config.get("device", "cpu"), bool(config.get("cpu_if_no_cuda")))
    torch.manual_seed(t.seed)  # identical initial weights (and spectral-norm vectors) on every rank
    model = build_model(m).to(device)
    roulette = _share_roulette(model, t.seed)
    loaders = make_loaders(
        t.data, t.data_root, t.batch_size, t.test_batch_size, rank, world, seed=t.seed,
        num_workers=t.loader_workers, toy_batches_per_epoch=t.steps_per_epoch or 100,
        **({"toy_test_size": t.test_size} if m.is_toy and t.test_size else {}),
    )
    return _Run(run, rank, world, device, model, TrainStep(model, t), loaders, roulette)


def _resume_or_initialise(r: _Run) -> tuple[int, list[dict[str, Any]]]:
    """(first epoch to train, the reports so far): from Ray Train's checkpoint (weights, step state,
    this rank's RNG streams) when there is one, else ActNorm initialised from the first batch."""
    t = r.run.train
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        torch.manual_seed(_seed(t.seed, r.rank))
        np.random.seed(_seed(t.seed, r.rank) % 2**32)
        set_epoch(r.loaders, 0)
        xb, _ = next(iter(r.loaders.train))
        r.model.initialize(model_input(xb, r.model, r.device))  # ActNorm from the (global) first batch
        return 0, []
    with ckpt.as_directory() as d:
        state = load_state(d, map_location=r.device)
        rng = load_rng(d, r.rank)
    r.model.load_state_dict(state["model"])
    r.step.load_state_dict(state["step"])
    start_epoch = int(state["epoch"])
    if rng is not None:
        restore_rng(rng, r.device)
        r.roulette.set_state(rng["roulette"])
    else:  # the run that wrote it had fewer ranks
        torch.manual_seed(_seed(t.seed + start_epoch, r.rank))
    return start_epoch, list(state["history"])


def _train_epoch(r: _Run, epoch: int, hold_concat: bool) -> tuple[dict[str, Any], bool]:
    """One epoch of steps (the image step cap, ``steps_per_epoch``, honoured); (its part of the
    report: mean train loss over every rank, iterations, last lr and gradient norm; whether every
    step stayed finite)."""
    m, t = r.run.model, r.run.train
    loss_sum, n_steps, finite, last = 0.0, 0, True, None
    for i, (xb, _) in enumerate(r.loaders.train):
        if t.steps_per_epoch is not None and not m.is_toy and i >= t.steps_per_epoch:
            break
        last = r.step(xb, hold_concat=hold_concat)
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


def _inject_faults(r: _Run, config: dict[str, Any], epoch: int) -> None:
    """Test hooks: raise at an epoch while a file exists, or poison the weights with NaN."""
    if config.get("inject_error_at_epoch") == epoch + 1 and os.path.exists(config["inject_error_while"]):
        raise RuntimeError(f"error injected at epoch {epoch + 1} (a test)")
    if config.get("inject_nan_at_epoch") == epoch + 1:
        with torch.no_grad():
            next(p for p in r.model.parameters() if p.requires_grad).fill_(math.nan)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point: set up, resume or initialise, then per epoch train, score the EMA
    weights on validation (decisions) and test (reports), and report with a checkpoint; a non-finite
    step or score ends the run as diverged. Returns rank 0's summary
    ``{status, epochs, best_val_score, history}``."""
    ctx = ray.train.get_context()
    r = _set_up(config, ctx.get_world_rank(), ctx.get_world_size())
    m, t = r.run.model, r.run.train
    metric_name = "test_nll" if m.is_toy else "test_bpd"
    start_epoch, history = _resume_or_initialise(r)
    r.step.forward = _wrap_ddp(r.model, r.device)
    writer = SummaryWriter(config["tensorboard_dir"]) if r.rank == 0 and config.get("tensorboard_dir") else None
    test_cap = -(-t.test_size // r.world) if (t.test_size and not m.is_toy) else None
    best = min((h[VAL] for h in history), default=math.inf)
    hold_epochs = m.family_spec.hold_concat_epochs(m.arch)  # the concatenation's weights wait this long

    for epoch in range(start_epoch, t.epochs):
        t0 = time.perf_counter()
        set_epoch(r.loaders, epoch)
        r.model.train()
        _inject_faults(r, config, epoch)
        metrics, finite = _train_epoch(r, epoch, epoch < hold_epochs)
        if finite:
            with r.step.ema.swapped_in():
                val, n_val = evaluate(r.model, r.loaders.val, r.device, t.eval_sn_iters, test_cap)
                score, n_test = evaluate(r.model, r.loaders.test, r.device, t.eval_sn_iters, test_cap,
                                         refresh_lipschitz=False)
            finite = math.isfinite(val) and math.isfinite(score)
        if not finite:  # the trial ends here; the scores are NaN, never a stand-in number
            metrics.update({VAL: math.nan, TEST: math.nan, metric_name: math.nan, BEST_VAL: best,
                            DIVERGED: True, "test_examples": 0, "epoch_seconds": time.perf_counter() - t0})
            history.append(metrics)
            ray.train.report(metrics)
            break
        best = min(best, val)
        metrics.update({VAL: val, TEST: score, metric_name: score, BEST_VAL: best, DIVERGED: False,
                        "val_examples": n_val, "test_examples": n_test, "epoch_seconds": time.perf_counter() - t0,
                        "param_crc": param_crc(r.model)})
        history.append(metrics)
        if writer is not None:
            for k in (VAL, TEST, "train_loss", BEST_VAL, "lr", "grad_norm"):
                writer.add_scalar(k, metrics[k], epoch + 1)
            writer.flush()
        _report_with_checkpoint(r.rank, r.device, r.roulette, metrics, {
            "model": r.model.state_dict(), "step": r.step.state_dict(),
            "epoch": epoch + 1, "history": history, "run": r.run.to_dict(), "world_size": r.world,
            "family_modules": list(config.get("family_modules") or []),
        })
    if writer is not None:
        writer.close()
    if r.rank != 0:
        return None
    status = "diverged" if history and history[-1].get(DIVERGED) else "finished"
    return {"status": status, "epochs": history[-1]["epoch"] if history else 0,
            BEST_VAL: best if math.isfinite(best) else None, "history": history}


def _report_with_checkpoint(rank: int, device: torch.device, roulette: torch.Generator,
                            metrics: dict[str, Any], state: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="idn-ckpt-") as d:
        meta = {k: v for k, v in state.items() if k not in ("model", "step")} if rank == 0 else None
        rng = {**capture_rng(device), "roulette": roulette.get_state()}
        save_checkpoint(d, rank, state if rank == 0 else None, rng, meta)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
