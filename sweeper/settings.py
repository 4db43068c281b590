"""A sweep's settings: one typed object, saved as JSON beside the experiment and read again by
``--resume``, ``results``, ``best`` and every trial driver.

It keeps the space file's text as the sweep started (a resumed sweep proposes from the same space
even if the file has changed or moved since), the forced train values every trial gets, the fixed
trials (baselines, enqueued configurations) and the placement each trial asked for.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from model.errors import UserError
from model.families import import_modules
from search_spaces.space import FixedTrial, SpaceError, shipped_spaces, space_from_dict

from .storage import Location, locate

SETTINGS_FILE = "idensenet_sweep.json"
JOURNAL_FILE = "optuna.journal"
TRAIN_RUNS_DIR = "train_runs"  # the Train runs of a sweep's trials, inside its experiment folder


def score_label(is_toy: bool, split: str = "test") -> str:
    """The axis label of a score on ``split``: NLL in nats for toy 2-D data, bits per dimension for images."""
    return f"{split} NLL (nats)" if is_toy else f"{split} bits/dim"


@dataclass(frozen=True)
class SweepSettings:
    name: str
    experiment: str  # the experiment folder (a path or a URI)
    space_name: str
    space_yaml: str
    data: str
    is_toy: bool
    epochs: int
    trials: int
    seed: int = 0
    sampler: str = "tpe"  # "tpe" (constant liar) or "random"
    grace_period: int = 1
    reduction_factor: float = 3.0
    brackets: int = 1  # ASHA's brackets (more than one: asynchronous Hyperband)
    scheduler: str = "asha"  # or "none": no early stopping
    multivariate: bool = True  # TPE: multivariate with group=True (False: independent per parameter)
    max_concurrent: int = 1
    shape: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    fixed: list[dict[str, Any]] = field(default_factory=list)
    n_startup_trials: int = 4
    cpu_if_no_cuda: bool = False
    worker_max_failures: int = 1
    trial_max_failures: int = 1
    controller_failure_limit: int = 3
    time_budget_s: float | None = None
    inject_nan_trials: list[int] = field(default_factory=list)
    inject_error_trials: list[int] = field(default_factory=list)
    inject_error_while: str | None = None
    inject_checkpoint_mb: int = 0
    sweep_id: str = ""  # new for every sweep (keys its local study copy); empty in sweeps made before it
    #: modules that register families defined outside model.families (imported wherever the sweep is read)
    family_modules: list[str] = field(default_factory=list)

    @property
    def metric_name(self) -> str:
        return "test_nll" if self.is_toy else "test_bpd"

    @property
    def unit(self) -> str:
        return "nats" if self.is_toy else "bpd"

    @property
    def journal(self) -> str:
        return locate(self.experiment).join(JOURNAL_FILE).uri

    def fixed_trials(self):
        return [FixedTrial(**d) for d in self.fixed]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepSettings":
        """Settings from their JSON (keys of older versions that no longer exist are skipped); the
        sweep's families defined outside this project are imported, so its trial configs can be read."""
        names = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in data.items() if k in names})
        import_modules(settings.family_modules)
        return settings

    def save(self, exp: Location) -> None:
        exp.join(SETTINGS_FILE).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, exp: Location) -> "SweepSettings":
        f = exp.join(SETTINGS_FILE)
        if not f.is_file():
            raise UserError(f"no sweep at {exp.uri} (missing {SETTINGS_FILE})")
        return cls.from_dict(json.loads(f.read_text()))


def command_line_train(epochs: int | None, batch_size: int | None, data_root: str | None,
                       overrides: dict[str, Any]) -> dict[str, Any]:
    """The train values ``--epochs``, ``--batch-size``, ``--data-root`` and ``--train KEY=VALUE`` set
    (``--train`` last, so it wins); the data root absolute, so workers elsewhere read the same one."""
    out: dict[str, Any] = {}
    if epochs is not None:
        out["epochs"] = epochs
    if batch_size is not None:
        out["batch_size"] = batch_size
    if data_root is not None:
        out["data_root"] = os.path.abspath(os.path.expanduser(data_root))
    return {**out, **overrides}


def space_text(ref: str) -> tuple[str, str]:
    """(name, YAML text) of a space file or a shipped space name."""
    p = Path(ref)
    if p.is_file():
        return p.stem, p.read_text(encoding="utf-8")
    name = ref[:-5] if ref.endswith(".yaml") else ref
    res = resources.files("search_spaces") / f"{name}.yaml"
    if "/" in name or not res.is_file():
        raise UserError(f"search space {ref!r}: no such file, nor a shipped space ({', '.join(shipped_spaces())})")
    return name, res.read_text(encoding="utf-8")


def load_space_text(name: str, text: str, source: str):
    """The validated space of a space file's text; a bad space is one :class:`UserError` line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"search space {source!r}: YAML syntax error: {getattr(e, 'problem', None) or e}") from None
    try:
        return space_from_dict(data, source=source, default_name=name)
    except SpaceError as e:
        raise UserError(f"search space {source!r}: {e.summary()}") from None


def load_space_of(settings: SweepSettings):
    return load_space_text(settings.space_name, settings.space_yaml, settings.space_name)
