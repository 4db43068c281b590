"""The run config: the one object that travels from a search to a checkpoint and a full run.

``RunConfig(model, train)`` pairs a :class:`~model.config.ModelConfig` with a
:class:`~model.train_config.TrainConfig` and checks that they fit each other (the model's input
shape and pixel levels are the data set's). Tune's trial config, every checkpoint and every entry of
``best.yaml`` hold its :meth:`to_dict`; overrides (a command's ``--epochs``, ``--train KEY=VALUE``)
go through :meth:`with_train` / :meth:`with_model`, which validate again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .config import ConfigError, ModelConfig
from .datasets import dataset_info
from .train_config import TrainConfig


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    train: TrainConfig

    def __post_init__(self) -> None:
        info = dataset_info(self.train.data)
        problems = []
        if tuple(self.model.input_shape) != info.shape:
            problems.append(("model.input_shape", f"{list(self.model.input_shape)} does not match data set "
                                                  f"{info.name} {list(info.shape)}"))
        elif info.n_levels is not None and self.model.n_levels != info.n_levels:
            problems.append(("model.n_levels", f"{self.model.n_levels} does not match data set {info.name} "
                                               f"({info.n_levels} levels)"))
        if problems:
            raise ConfigError(problems)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """From ``{"model": {...}, "train": {...}}``; problems are reported as ``model.<field>`` /
        ``train.<field>``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
            raise ConfigError([("run", "expected a mapping with 'model' (and 'train') sections")])
        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise ConfigError([(k, "unknown run config section (expected model, train)") for k in unknown])
        problems = []
        parts: dict[str, Any] = {}
        for name, cls_ in (("model", ModelConfig), ("train", TrainConfig)):
            try:
                parts[name] = cls_.from_dict(data.get(name) or {})
            except ConfigError as err:
                problems += [(f"{name}.{w}" if w else name, m) for w, m in err.problems]
            except TypeError as err:  # a field given twice, or a value the dataclass cannot take
                problems.append((name, str(err)))
        if problems:
            raise ConfigError(problems)
        return cls(parts["model"], parts["train"])

    def with_train(self, **changes: Any) -> "RunConfig":
        """A copy with train fields changed (numbers given as text are converted; validated again)."""
        return self._with("train", changes)

    def with_model(self, **changes: Any) -> "RunConfig":
        return self._with("model", changes)

    def _with(self, part: str, changes: Mapping[str, Any]) -> "RunConfig":
        if not changes:
            return self
        current = getattr(self, part)
        names = {f.name for f in dataclasses.fields(current)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError([(f"{part}.{k}", f"unknown {part} config key") for k in unknown])
        try:
            updated = dataclasses.replace(current, **changes)
        except ConfigError as err:
            raise ConfigError([(f"{part}.{w}" if w else part, m) for w, m in err.problems]) from None
        return dataclasses.replace(self, **{part: updated})
