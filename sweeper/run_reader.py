"""Reading a Train run from its checkpoint folders alone, safely while the run is still writing.

A trial's Train run (``<experiment>/train_runs/train-<trial id>``) holds one ``checkpoint_*`` folder
per kept epoch. Each folder's ``meta.json`` (:mod:`sweeper.checkpoint`) names the epoch, every epoch
report so far (``history``) and the size of every file rank 0 wrote before it. A folder counts only
when that ``meta.json`` parses and every file it lists has the listed size; anything else is a folder
being uploaded, being deleted (Ray evicts old checkpoints after writing a new snapshot) or torn, and
is skipped. So a reader on local, NFS-like or S3 storage gets the newest consistent state of a live
run and never raises for what the writer is doing at the same moment; it does not rebuild Ray
Train's checkpoint manager, whose snapshot can be read half-written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from .checkpoint import META_FILE, STATE_FILE
from .storage import Location

CHECKPOINT_PREFIX = "checkpoint_"


@dataclass(frozen=True)
class SavedCheckpoint:
    """One complete checkpoint folder: where it is, its epoch (1-based, the epochs it has trained) and
    every epoch report up to and including that epoch."""

    location: Location
    epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def report(self) -> dict[str, Any]:
        """The report of the checkpoint's own epoch."""
        return self.history[-1] if self.history else {}


def _files_by_folder(run: Location) -> dict[str, dict[str, int]]:
    """checkpoint folder name -> {file name: size} (one listing of the whole run)."""
    selector = pafs.FileSelector(run.path, recursive=True, allow_not_found=True)
    try:
        infos = run.fs.get_file_info(selector)
    except (OSError, FileNotFoundError):  # the run folder vanished or cannot be listed right now
        return {}
    out: dict[str, dict[str, int]] = {}
    root = run.path.rstrip("/") + "/"
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.startswith(root):
            continue
        parts = info.path[len(root):].split("/")
        if len(parts) == 2 and parts[0].startswith(CHECKPOINT_PREFIX):
            out.setdefault(parts[0], {})[parts[1]] = int(info.size or 0)
    return out


def _complete(folder: Location, sizes: dict[str, int]) -> SavedCheckpoint | None:
    if META_FILE not in sizes:
        return None
    try:
        meta = json.loads(folder.join(META_FILE).read_text())
        listed = meta.get("files") or {STATE_FILE: None}  # folders written before sizes were listed
        if any(name not in sizes or (size is not None and sizes[name] != int(size)) for name, size in listed.items()):
            return None
        return SavedCheckpoint(folder, int(meta["epoch"]), list(meta.get("history") or []))
    except (OSError, ValueError, KeyError, TypeError):  # vanished, torn or not ours
        return None


def saved_checkpoints(run: Location) -> list[SavedCheckpoint]:
    """Every complete checkpoint of the Train run at ``run``, oldest epoch first (empty when none)."""
    found = []
    for name, sizes in sorted(_files_by_folder(run).items()):
        ckpt = _complete(run.join(name), sizes)
        if ckpt is not None:
            found.append(ckpt)
    return sorted(found, key=lambda c: (c.epoch, c.location.name))


def latest_checkpoint(run: Location) -> SavedCheckpoint | None:
    saved = saved_checkpoints(run)
    return saved[-1] if saved else None


def checkpointed_history(run: Location) -> list[dict[str, Any]]:
    """Every epoch report the newest complete checkpoint of the run holds (empty without one)."""
    latest = latest_checkpoint(run)
    return list(latest.history) if latest else []


def checkpoint_of_epoch(saved: list[SavedCheckpoint], epoch: int | None) -> SavedCheckpoint | None:
    """The complete checkpoint written at ``epoch`` (None when that epoch's was not kept)."""
    same = [c for c in saved if c.epoch == epoch]
    return same[-1] if same else None
