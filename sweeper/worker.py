"""The loop every Ray Train worker runs: a thin adapter between Ray and :class:`model.train_step.TrainStep`.

What it adds to the step: Ray's context (rank, world size, device), resuming from
``ray.train.get_checkpoint()``, one ``ray.train.report`` per epoch on every rank with a checkpoint
(see :mod:`sweeper.checkpoint`), and a return value (rank 0's summary, ``Result.return_value``).

``config`` (the Train loop config): ``run`` (a :class:`model.run_config.RunConfig` dict), ``device``
("cpu" or "cuda"), and optionally ``cpu_if_no_cuda`` (tests on fake GPUs), ``inject_nan_at_epoch``
(tests: the weights become NaN at the start of that 1-based epoch), ``inject_error_at_epoch`` with
``inject_error_while`` (tests: raise at the start of that epoch while that file exists),
``inject_checkpoint_mb`` (tests: every checkpoint's state carries that many MiB of zeros) and
``tensorboard_dir``.

DDP averages gradients over the workers, so W workers with B/W each follow the update of one
process with batch B; every rank draws the same Russian-roulette lengths (one generator seeded
alike everywhere: the authors' one draw per minibatch and block), and each rank its own probes and
dequantisation noise. Each epoch's report (keys in :mod:`sweeper.metrics`): the validation and the
test score with the EMA weights (each summed over every worker's shard), and ``param_crc``, a
checksum of this rank's parameters.
"""

from __future__ import annotations

import time

_IMPORT_STARTED = time.time()

import math  # noqa: E402  (what follows is timed: a worker's imports are part of a trial's start-up)
import os  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import zlib  # noqa: E402
from typing import Any  # noqa: E402

import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
import torch  # noqa: E402
from tensorboardX import SummaryWriter  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from model.errors import UserError  # noqa: E402
from model.families import import_modules  # noqa: E402
from model.run_config import RunConfig  # noqa: E402
from model.run import Run, derived_seed, initialise, set_up, train_epoch  # noqa: E402
from model.run import score as score_epoch  # noqa: E402
from model.train_step import distributed  # noqa: E402

from .checkpoint import capture_rng, load_rng, load_state, restore_rng, save_checkpoint  # noqa: E402
from .metrics import BEST_VAL, DIVERGED, TEST, VAL  # noqa: E402
from .startup import KEY as STARTUP  # noqa: E402


#: seconds this module's imports took in this process (torch, the model, Ray Train's torch part ...
#: whatever was not loaded yet): a worker's share of a trial's start-up, see :mod:`sweeper.startup`
IMPORT_SECONDS = time.time() - _IMPORT_STARTED


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


def param_crc(model: nn.Module) -> int:
    """CRC-32 of the bytes of every parameter, in order (ranks that agree bit for bit agree here)."""
    crc = 0
    for p in model.parameters():
        crc = zlib.crc32(p.detach().cpu().contiguous().numpy().tobytes(), crc)
    return crc


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP over the process group (its constructor broadcasts rank 0's parameters and buffers). Every
    parameter that trains takes part in every step, so DDP need not search for unused ones."""
    if not distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _set_up(config: dict[str, Any], rank: int, world: int) -> Run:
    """The run config (its family's module imported first), the device, then :func:`model.run.set_up`
    with the CPUs Ray reserved for this worker."""
    import_modules(config.get("family_modules", ()))  # families registered outside model.families
    device = choose_device(config.get("device", "cpu"), bool(config.get("cpu_if_no_cuda")))
    return set_up(RunConfig.from_dict(config["run"]), rank, world, device, reserved_cpus())


def reserved_cpus() -> float | None:
    """The CPUs Ray reserved for this worker (its ``resources_per_worker``); None outside a Ray worker
    (the loop called in the driver's own process, as with ``ScalingConfig(num_workers=0)``)."""
    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    return ray.get_runtime_context().get_assigned_resources().get("CPU")


def _resume_or_initialise(r: Run) -> tuple[int, list[dict[str, Any]]]:
    """(first epoch to train, the reports so far): from Ray Train's checkpoint (weights, step state,
    this rank's RNG streams) when there is one, else ActNorm initialised from the first batch."""
    t = r.run.train
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        initialise(r)
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
        torch.manual_seed(derived_seed(t.seed + start_epoch, r.rank))
    return start_epoch, list(state["history"])


def _inject_faults(r: Run, config: dict[str, Any], epoch: int) -> None:
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
    marks = {**config.get(STARTUP, {}), "worker_import_s": IMPORT_SECONDS, "loop_entry": time.time()}
    import torch._dynamo  # noqa: F401  what torch.optim's first optimiser imports anyway, timed on its own
    marks["torch_imported"] = time.time()
    ctx = ray.train.get_context()
    r = _set_up(config, ctx.get_world_rank(), ctx.get_world_size())
    m, t = r.run.model, r.run.train
    metric_name = "test_nll" if m.is_toy else "test_bpd"
    marks["set_up"] = time.time()
    start_epoch, history = _resume_or_initialise(r)
    marks["initialised"] = time.time()
    r.step.forward = _wrap_ddp(r.model, r.device)
    writer = SummaryWriter(config["tensorboard_dir"]) if r.rank == 0 and config.get("tensorboard_dir") else None
    best = min((h[VAL] for h in history), default=math.inf)

    for epoch in range(start_epoch, t.epochs):
        t0 = time.perf_counter()
        _inject_faults(r, config, epoch)
        metrics, finite = train_epoch(r, epoch)
        if finite:
            val, n_val, score, n_test = score_epoch(r)
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
        if epoch == start_epoch and r.first_step_at is not None:  # this process's first report
            metrics = {**metrics, STARTUP: {**marks, "first_step": r.first_step_at}}
        _report_with_checkpoint(r.rank, r.device, r.roulette, metrics, {
            "model": r.model.state_dict(), "step": r.step.state_dict(),
            "epoch": epoch + 1, "history": history, "run": r.run.to_dict(), "world_size": r.world,
            "family_modules": list(config.get("family_modules") or []),
            **({"padding": torch.zeros(config["inject_checkpoint_mb"] << 18)} if config.get("inject_checkpoint_mb") else {}),
        })
    if writer is not None:
        writer.close()
    if r.rank != 0:
        return None
    status = "diverged" if history and history[-1].get(DIVERGED) else "finished"
    return {"status": status, "epochs": history[-1]["epoch"] if history else 0,
            BEST_VAL: best if math.isfinite(best) else None, "history": history}


#: how each epoch's checkpoint reaches the experiment's storage. ASYNC: written to a local folder, then
#: uploaded by Ray's background thread while the next epoch trains; Ray registers the checkpoint, and
#: reports the epoch to Tune, only once its upload is complete (so a crash mid-upload leaves the
#: previous checkpoint as the one a resume reads), and deletes the local folder afterwards.
#: ``bench.checkpoint_wait`` measures what an epoch waits for its checkpoint in each mode.
UPLOAD_MODE = ray.train.CheckpointUploadMode.ASYNC


def _report_with_checkpoint(rank: int, device: torch.device, roulette: torch.Generator,
                            metrics: dict[str, Any], state: dict[str, Any],
                            mode: ray.train.CheckpointUploadMode = UPLOAD_MODE) -> None:
    d = tempfile.mkdtemp(prefix="idn-ckpt-")  # Ray deletes it once uploaded (ASYNC's default)
    meta = {k: v for k, v in state.items() if k not in ("model", "step")} if rank == 0 else None
    rng = {**capture_rng(device), "roulette": roulette.get_state()}
    save_checkpoint(d, rank, state if rank == 0 else None, rng, meta)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_upload_mode=mode,
                     delete_local_checkpoint_after_upload=True)
