"""The per-worker training loop that every Ray Train worker runs (authors' recipe, §9 of the notes).

One step: warm-up lr = lr·min((itr+1)/warmup, 1); the loss (mean bits/dim of dequantised images, or
mean NLL in nats for toy data); backward; gradient-norm clip; Adam step; zero_grad; hold the learnable
concatenation at its initial η while epoch < ``lc_start_epoch`` (paper §3.3); refine the spectral
norms (paper eq. 2); update the parameter EMA. Gradients are averaged over workers by DDP, so W
workers with batch B/W each follow the same update as one process with batch B.

Every epoch: test score with the EMA weights swapped in, summed over every worker's shard; then a
checkpoint (see :mod:`sweeper.checkpointing`) and one ``ray.train.report`` on every rank, of which
Train forwards rank 0's (already all-reduced) metrics to Tune. A non-finite loss or gradient norm on
any worker ends the run on all of them with a final ``diverged`` report instead of an error.
"""

from __future__ import annotations

import math
import tempfile
import time
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpointing import capture_rng, load_rng, load_state, restore_rng, save_checkpoint
from .loop_parts import (ParamEMA, all_reduce_sum, any_rank, distributed, evaluate, model_input,
                         score_from_output)
from .train_config import DIVERGED_SCORE, TrainConfig


def _device(use_gpu: bool) -> torch.device:
    if use_gpu and torch.cuda.is_available():
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def _rank_seed(seed: int, rank: int) -> int:
    return zlib.crc32(f"{seed}/{rank}".encode())


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP over the initialised process group; its constructor broadcasts rank 0's parameters and
    buffers (including the data-dependent ActNorm initialisation). ``find_unused_parameters`` because
    every block carries the authors' never-used ``geom_p`` / ``lamb`` parameters."""
    if not distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def _grad_norm_and_clip(params: list[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """The global l2 norm of the gradients (reported, and checked for NaN/Inf); when ``max_norm`` is set
    the gradients are scaled by min(1, max_norm / norm), as ``clip_grad_norm_`` does."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return norm


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config = {"model": ModelConfig dict, "train": TrainConfig dict}``."""
    import ray.train
    from model.config import ModelConfig
    from model.data import make_loaders, set_epoch
    from model.flow import build_model

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    mcfg = ModelConfig.from_dict(config["model"])
    tc = TrainConfig.from_dict(config["train"]).resolved()
    device = _device(tc.use_gpu)
    is_toy = mcfg.is_toy

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = build_model(mcfg).to(device)
    loaders = make_loaders(
        tc.data, tc.data_root, tc.batch_size, tc.test_batch_size, rank, world, seed=tc.seed,
        num_workers=tc.loader_workers, toy_batches_per_epoch=tc.steps_per_epoch or 100,
        **({"toy_test_size": tc.test_size} if is_toy and tc.test_size else {}),
    )
    n_levels = loaders.n_levels
    if tuple(loaders.input_shape) != tuple(mcfg.input_shape):
        raise ValueError(f"data {tc.data!r} has shape {loaders.input_shape}, model expects {mcfg.input_shape}")
    # multi-tensor Adam: the same update as the per-tensor loop, fewer kernel launches (bench/, docs/performance.md)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay,
                                 foreach=True)
    ema = ParamEMA(model, tc.ema_decay)
    start_epoch, itr, best = 0, 0, math.inf

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_state(d, map_location=device)
            rng = load_rng(d, rank)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state.get("ema"))
        start_epoch, itr, best = state["epoch"], state["iteration"], state["best_test_score"]
        if rng is not None:
            restore_rng(rng, device)
        else:
            torch.manual_seed(_rank_seed(tc.seed + start_epoch, rank))
    else:
        torch.manual_seed(_rank_seed(tc.seed, rank))
        np.random.seed(_rank_seed(tc.seed, rank) % 2**32)
        set_epoch(loaders, 0)
        xb, _ = next(iter(loaders.train))
        model.initialize(model_input(xb, device, is_toy, n_levels))  # data-dependent ActNorm init, before DDP
    net = _wrap_ddp(model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    writer = _tensorboard(tc, rank)
    per_rank_test_cap = -(-tc.test_size // world) if (tc.test_size and not is_toy) else None

    for epoch in range(start_epoch, tc.epochs):
        t0 = time.perf_counter()
        set_epoch(loaders, epoch)
        model.train()
        loss_sum, n_steps, diverged, gnorm = 0.0, 0, False, 0.0
        for step, (xb, _) in enumerate(loaders.train):
            if tc.steps_per_epoch is not None and not is_toy and step >= tc.steps_per_epoch:
                break
            x = model_input(xb, device, is_toy, n_levels)
            lr = tc.lr * min((itr + 1) / tc.warmup_iters, 1.0) if tc.warmup_iters else tc.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            z, logdet = net(x)
            loss = score_from_output(z, logdet, is_toy, n_levels).mean()
            if tc.inject_nan_at_epoch is not None and epoch + 1 >= tc.inject_nan_at_epoch:
                loss = loss * float("nan")
            loss.backward()
            gnorm_t = _grad_norm_and_clip(params, tc.grad_clip)
            loss_value, gnorm = torch.stack([loss.detach().double(), gnorm_t.double()]).tolist()  # one host read
            bad = not (math.isfinite(loss_value) and math.isfinite(gnorm))
            if any_rank(bad, device) if distributed() else bad:
                diverged = True
                optimizer.zero_grad(set_to_none=True)
                break
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if epoch < mcfg.lc_start_epoch:
                model.reset_concat()
            model.update_lipschitz(mcfg.sn_train_iters)
            ema.update()
            itr += 1
            loss_sum += loss_value
            n_steps += 1
        loss_total, steps_total = all_reduce_sum([loss_sum, float(n_steps)], device)
        train_loss = loss_total / steps_total if steps_total else float("nan")
        base = {"epoch": epoch + 1, "train_loss": train_loss, "param_count": model.num_parameters(),
                "iterations": itr, "lr": lr if n_steps else tc.lr, "grad_norm": gnorm}
        if not diverged:
            with ema.swapped_in():
                score, n_test = evaluate(model, loaders.test, is_toy, n_levels, device,
                                         tc.eval_sn_iters, per_rank_test_cap)
            diverged = not math.isfinite(score)
        if diverged:
            metrics = {**base, "test_score": DIVERGED_SCORE, "best_test_score": min(best, DIVERGED_SCORE),
                       "diverged": True, "test_examples": 0, "epoch_seconds": time.perf_counter() - t0}
            metrics["test_nll" if is_toy else "test_bpd"] = DIVERGED_SCORE
            _write_status(tc, rank, metrics)
            ray.train.report(metrics)
            break
        best = min(best, score)
        metrics = {**base, "test_score": score, "best_test_score": best, "diverged": False,
                   "test_examples": n_test, "epoch_seconds": time.perf_counter() - t0}
        metrics["test_nll" if is_toy else "test_bpd"] = score
        _write_status(tc, rank, metrics)
        if writer is not None:
            for k in ("test_score", "train_loss", "best_test_score", "lr", "grad_norm"):
                writer.add_scalar(k, metrics[k], epoch + 1)
            writer.flush()
        _report_with_checkpoint(ray.train, rank, device, metrics, {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1, "iteration": itr, "best_test_score": best, "test_score": score,
            "model_config": mcfg.to_dict(), "train_config": tc.to_dict(), "world_size": world,
        })
    if writer is not None:
        writer.close()


def _report_with_checkpoint(train_mod, rank: int, device: torch.device, metrics: dict, state: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="idn-ckpt-") as d:
        meta = None
        if rank == 0:
            meta = {k: v for k, v in state.items() if k not in ("model", "ema", "optimizer")}
            meta["metrics"] = metrics
        save_checkpoint(d, rank, state if rank == 0 else None, capture_rng(device), meta)
        train_mod.report(metrics, checkpoint=train_mod.Checkpoint.from_directory(d))


def _write_status(tc: TrainConfig, rank: int, metrics: dict) -> None:
    if rank == 0 and tc.status_path:
        import json

        from .storage import locate

        locate(tc.status_path).write_text(json.dumps(metrics))


def _tensorboard(tc: TrainConfig, rank: int):
    if rank != 0 or not tc.tensorboard_dir:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # optional: Tune's own logger covers sweeps
        return None
    return SummaryWriter(tc.tensorboard_dir)
