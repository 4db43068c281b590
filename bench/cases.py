"""The models and batches the benchmark times, by name.

Training cases (one call of the production :class:`model.train_step.TrainStep` each, with the
recipe of the case's data kind: :func:`train_step`):

* ``toy``: the authors' toy i-DenseNet (``toy_config()``: 10 blocks, depth 3, growth 16, LipSwish,
  LC, geometric roulette, plain backprop through the series, 5 power iterations), batch 500 of moons;
* ``image111``: image i-DenseNet 1-1-1 blocks, depth 3, growth 32, CLipSwish, 3×32×32, batch 16
  (Poisson roulette, Neumann gradient, memory-efficient gradient, tolerance-mode spectral norm);
* ``image111_plain``: the same maths with ``mem_eff=False`` (the Neumann surrogate back-propagated
  in the ordinary way), the memory yardstick for the memory-efficient gradient; ``image111_series``:
  ``neumann_grad=False, mem_eff=False``, plain backprop through the whole power series;
* ``cifar_small``: the paper's small CIFAR10 i-DenseNet (4-4-4, depth 3, growth 178, 8,695,158
  parameters), ``cifar_small_plain`` the same with ``mem_eff=False``; ``resflow_small``: the small
  Residual Flow baseline (4-4-4, hidden 512, LipSwish);
* ``cifar_full``: the full CIFAR10 i-DenseNet (16-16-16, depth 3, growth 172; GPU only in practice).

Images are uniform random uint8 levels (the data do not change the cost of a step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from model.config import ModelConfig, model_config, toy_config
from search_spaces.budgets import REFERENCE_CONFIGS
from model.data import toy_sample
from model.flow import Flow, build_model
from model.train_config import TrainConfig
from model.train_step import TrainStep

IMAGE111 = model_config(blocks_per_scale=(1, 1, 1), depth=3, growth=32, activation="clipswish")
CONFIGS: dict[str, ModelConfig] = {
    "toy": toy_config(),
    "image111": IMAGE111,
    "image111_plain": IMAGE111.replace(mem_eff=False),
    "image111_series": IMAGE111.replace(mem_eff=False, neumann_grad=False),
    "cifar_small": model_config(blocks_per_scale=(4, 4, 4), depth=3, growth=178),
    "cifar_small_plain": model_config(blocks_per_scale=(4, 4, 4), depth=3, growth=178, mem_eff=False),
    "resflow_small": REFERENCE_CONFIGS["cifar10-small"],  # the 8.7M Residual Flow of paper Table 1
    "cifar_full": model_config(blocks_per_scale=(16, 16, 16), depth=3, growth=172),
}
DEFAULT_BATCH = {"toy": 500, "image111": 16, "image111_plain": 16, "image111_series": 16}


def default_batch(name: str, device: torch.device) -> int:
    """Batch of a case: toy 500, 1-1-1 16; CIFAR-size models 16 on a CPU and 64 (the authors') on a GPU."""
    if name in DEFAULT_BATCH:
        return DEFAULT_BATCH[name]
    return 64 if device.type == "cuda" else 16


@dataclass
class Case:
    name: str
    config: ModelConfig
    model: Flow
    batch_size: int
    batch: Callable[[int], torch.Tensor]  # i -> the i-th batch (4 distinct batches, cycled)


def make_case(name: str, device: torch.device, batch: int | None = None, seed: int = 0,
              config: ModelConfig | None = None) -> Case:
    """Build the model of case ``name`` on ``device`` (seeded) and 4 fixed batches for it."""
    if name not in CONFIGS and config is None:
        raise ValueError(f"unknown case {name!r}; valid: {', '.join(CONFIGS)}")
    cfg = config if config is not None else CONFIGS[name]
    bs = batch if batch is not None else default_batch(name, device)
    torch.manual_seed(seed)
    model = build_model(cfg).to(device)
    model.train()
    if cfg.is_toy:
        rng = np.random.default_rng(seed)
        data = [toy_sample("moons", bs, rng).to(device) for _ in range(4)]
    else:
        gen = torch.Generator().manual_seed(seed)
        data = [torch.randint(0, cfg.n_levels, (bs, *cfg.input_shape), dtype=torch.uint8, generator=gen).to(device)
                for _ in range(4)]
    return Case(name, cfg, model, bs, lambda i: data[i % len(data)])


def train_step(case: Case, forward: torch.nn.Module | None = None, fused: bool = False) -> TrainStep:
    """The production step for a case: the authors' recipe of its data kind (images: warm-up,
    clip 1.0, EMA 0.999; toy: none of them), on the case's batch size; ``forward``: a DDP wrapper;
    ``fused``: the train config's switch of the same name (:mod:`model.fused`)."""
    data = "moons" if case.config.is_toy else ("digits" if case.config.input_shape == (1, 8, 8) else "cifar10")
    return TrainStep(case.model, TrainConfig(data=data, batch_size=case.batch_size, fused=fused), forward=forward)
