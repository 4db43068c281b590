"""Checkpoints that alone rebuild and resume a run.

A checkpoint folder holds

* ``state.pt`` (rank 0): model weights and buffers, the training step's state (optimiser, EMA shadow
  parameters, the iteration counter that drives the warm-up), the number of finished epochs, every
  epoch's report so far (``history``) and the run config dict (:class:`model.run_config.RunConfig`);
* ``rng_rank<r>.pt`` (every rank r): that process's torch (CPU and CUDA), numpy and python RNG states,
  so the Russian-roulette draws, Hutchinson probes and dequantisation noise continue exactly;
* ``meta.json`` (rank 0, written last): the same without tensors, human-readable, and ``files``, the
  size in bytes of every file rank 0 wrote before it.

Every file is written to a temporary name in the same folder and moved into place with
``os.replace``, so a crash never leaves a truncated file behind. A copy of the folder elsewhere
(Ray Train uploads it to the experiment's storage) is complete when its ``meta.json`` parses and
every file it lists has the listed size: :mod:`sweeper.run_reader` reads runs by that rule.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.errors import UserError
from model.families import import_modules
from model.flow import build_model
from model.run_config import RunConfig

from .storage import atomic_write_file

STATE_FILE = "state.pt"
META_FILE = "meta.json"
#: stored in every state.pt; a reader refuses a newer one rather than misread it. 3: the model config's
#: family fields nested under ``arch`` (format 2 kept them flat; read through ModelConfig.from_dict)
CHECKPOINT_FORMAT = 3


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states: torch CPU (and the CUDA device's), numpy global, python ``random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(directory: str | os.PathLike[str], rank: int, state: dict[str, Any] | None,
                    rng: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
    """Write this rank's part of a checkpoint into ``directory`` (rank 0 passes ``state`` and ``meta``)."""
    d = Path(directory)
    atomic_write_file(d / rng_file(rank), lambda f: torch.save(rng, f))
    if state is not None:
        atomic_write_file(d / STATE_FILE, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))
    if meta is not None:
        written = [rng_file(rank)] + ([STATE_FILE] if state is not None else [])
        meta = {**meta, "files": {name: (d / name).stat().st_size for name in written}}
        atomic_write_file(d / META_FILE, lambda f: f.write(json.dumps(meta, indent=1, default=str).encode()))


def load_state(directory: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """The rank-0 state of a checkpoint folder (raises FileNotFoundError naming the folder, and
    :class:`UserError` for a checkpoint written in a newer format than this version reads)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {STATE_FILE} in checkpoint folder {directory}")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if state.get("format", 1) > CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {directory} has format {state['format']}, newer than the {CHECKPOINT_FORMAT} "
                        "this version of idensenet-sweep reads: update it")
    return state


def load_rng(directory: str | os.PathLike[str], rank: int) -> dict[str, Any] | None:
    """This rank's RNG states, or None when the run that wrote it had fewer ranks."""
    path = Path(directory) / rng_file(rank)
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def load_model(directory: str | os.PathLike[str], use_ema: bool = True):
    """``(model, state)``: the flow a checkpoint describes with its weights (the EMA weights when
    present), in eval mode on the CPU."""
    state = load_state(directory)
    import_modules(state.get("family_modules") or [])  # a family defined outside model.families
    model = build_model(RunConfig.from_dict(state["run"]).model)
    model.load_state_dict(state["model"])
    ema = state["step"].get("ema") if use_ema else None
    if ema:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in ema.items():
                named[name].copy_(value)
    model.eval()
    return model, state
