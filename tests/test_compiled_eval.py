"""Compiled evaluation (model/compiled_eval.py, the train config's ``fused``): the same outputs,
log-determinants and scores as eager evaluation on the same draws, for both families and toy data,
and no recompilation in a second epoch whose last batch is smaller than the others."""

from __future__ import annotations

import shutil

import pytest
import torch

from model import model_config, toy_config
from model.compiled_eval import compiled_evaluation
from model.flow import build_model
from model.iresblock import InvertibleResBlock
from model.train_step import evaluate
from search_spaces.budgets import REFERENCE_CONFIGS

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile on a CPU needs a C++ compiler")

CASES = {
    "toy i-DenseNet (exact 2-D log-det)": toy_config(blocks_per_scale=(2,), depth=2, growth=8),
    "digits i-DenseNet 1-1, CLipSwish": model_config(
        input_shape=(1, 8, 8), n_levels=17, blocks_per_scale=(1, 1), depth=2, growth=8, fc_blocks=1,
        activation="clipswish"),
    "digits Residual Flow (the digits budget)": REFERENCE_CONFIGS["digits"],
}


def _batch(config, n: int, seed: int) -> torch.Tensor:  # noqa: ANN001
    gen = torch.Generator().manual_seed(seed)
    if config.is_toy:
        return torch.randn(n, 2, generator=gen)
    return torch.randint(0, config.n_levels, (n, *config.input_shape), dtype=torch.uint8, generator=gen)


def _scored(model, x: torch.Tensor):  # noqa: ANN001
    """(output, log-det, per-sample score) of one batch with the same probes and roulette draws."""
    from model.train_step import model_input

    torch.manual_seed(11)
    for block in model.modules():
        if isinstance(block, InvertibleResBlock):
            block.roulette_generator = torch.Generator().manual_seed(13)
    z, logdet = model(model_input(x, model, torch.device("cpu")))
    return z, logdet, model.score_from_output(z, logdet)


def _trained_a_little(config):  # noqa: ANN001
    torch.manual_seed(0)
    model = build_model(config)
    model.initialize(_prepared(config, model))
    with torch.no_grad():  # move every weight off its initial value, as training would
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.update_lipschitz(None)
    return model.eval()


def _prepared(config, model):  # noqa: ANN001
    from model.train_step import model_input

    return model_input(_batch(config, 32, 1), model, torch.device("cpu"))


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_evaluation_equals_eager_on_the_same_draws(name: str) -> None:
    config = CASES[name]
    model = _trained_a_little(config)
    x = _batch(config, 16, 2)
    with torch.no_grad():
        eager = _scored(model, x)
    from torch._dynamo.utils import counters

    counters.clear()
    with torch.no_grad(), compiled_evaluation(model):
        compiled = _scored(model, x)
    assert counters["stats"]["unique_graphs"] >= 1  # the blocks did run compiled
    for e, c in zip(eager, compiled):
        assert c.shape == e.shape
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
    if not config.is_toy:  # the series' terms differ from one draw to another: the check has teeth
        with torch.no_grad():
            torch.manual_seed(12)
            other = model.score_from_output(*model(_prepared(config, model)[:16]))
        assert (other - eager[2]).abs().max() > 1e-3
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.endswith(("geom_p", "lamb")))
    assert not any("compiled" in k or "_orig_mod" in k for k in model.state_dict())


def test_a_second_epoch_compiles_nothing_and_training_is_untouched() -> None:
    from torch._dynamo.utils import counters

    config = CASES["digits i-DenseNet 1-1, CLipSwish"]
    model = _trained_a_little(config)
    batches = [(_batch(config, n, 10 + i), None) for i, n in enumerate((16, 16, 16, 7))]  # a smaller last batch
    counters.clear()
    torch.manual_seed(3)
    first, n = evaluate(model, batches, torch.device("cpu"), None, compiled=True)
    graphs = counters["stats"]["unique_graphs"]
    assert n == 55 and graphs >= 1
    for _ in range(2):  # further epochs: other roulette draws, the same shapes
        evaluate(model, batches, torch.device("cpu"), None, compiled=True)
    assert counters["stats"]["unique_graphs"] == graphs
    torch.manual_seed(3)
    eager, _ = evaluate(model, batches, torch.device("cpu"), None)
    assert first == pytest.approx(eager, rel=1e-6)
    # the blocks train eagerly with their parameters trainable again
    model.train()
    z, logdet = model(_prepared(config, model))
    (-(logdet.sum() - 0.5 * z.pow(2).sum())).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["toy i-DenseNet (exact 2-D log-det)", "digits i-DenseNet 1-1, CLipSwish"])
def test_compiled_sampling_inverts_like_eager_and_compiles_once(name: str) -> None:
    """Flow.sample(compiled=True): the fixed-point iteration with every g compiled gives eager's
    samples on the same z, the flow maps them back to that z, and a second call, whose blocks need
    other numbers of iterations (another temperature), compiles nothing."""
    from torch._dynamo.utils import counters

    config = CASES[name]
    model = _trained_a_little(config)
    eager = model.sample(12, generator=torch.Generator().manual_seed(4))
    counters.clear()
    compiled = model.sample(12, generator=torch.Generator().manual_seed(4), compiled=True)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        z, _ = model(compiled)
    z0 = torch.randn(12, config.n_dims, generator=torch.Generator().manual_seed(4))
    assert (z - z0).abs().max() < 1e-3 < (z - torch.randn_like(z0)).abs().max()
    model.sample(12, temperature=0.5, generator=torch.Generator().manual_seed(5), compiled=True)
    assert counters["stats"]["unique_graphs"] == graphs
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.endswith(("geom_p", "lamb")))


def test_a_nested_compiled_context_leaves_the_outer_one_active() -> None:
    """Sampling with ``compiled=True`` inside scoring's compiled context keeps the outer context's
    compiled modules and leaves them switched on when it returns."""
    model = _trained_a_little(CASES["digits i-DenseNet 1-1, CLipSwish"])
    blocks = [m for m in model.modules() if isinstance(m, InvertibleResBlock)]
    with compiled_evaluation(model):
        nets = [b.compiled_net for b in blocks]
        model.sample(4, generator=torch.Generator().manual_seed(0), compiled=True)
        assert all(b.use_compiled for b in blocks) and [b.compiled_net for b in blocks] == nets
    assert not any(b.use_compiled for b in blocks)
