"""The fused dense-layer operator (model/fused.py, the train config's ``fused``): its first and second
derivatives against finite differences, and a training step's loss and every gradient against eager
autograd on the same draws (toy LipSwish and digits CLipSwish i-DenseNets, the second with the
Neumann and memory-efficient log-det gradients)."""

from __future__ import annotations

import shutil

import pytest
import torch

from model import TrainConfig, model_config, toy_config
from model.dense import DenseLayer
from model.flow import build_model
from model.fused import fused_concat
from model.iresblock import InvertibleResBlock
from model.train_step import TrainStep, model_input

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile on a CPU needs a C++ compiler")


def _eager(x, y, beta, a, c, mirrored):  # noqa: ANN001
    first = c * y * torch.sigmoid(beta * y)
    return torch.cat([a * x, first, first - c * y] if mirrored else [a * x, first], dim=1)


@pytest.mark.parametrize("mirrored", [False, True], ids=["lipswish", "clipswish"])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 4)], ids=["features", "images"])
def test_fused_concat_derivatives_match_finite_differences(mirrored: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(*shape, **d)
    y = torch.randn(shape[0], shape[1] + 2, *shape[2:], **d)
    scalars = [torch.tensor(v, **d) for v in (0.9, 0.7, 0.6)]  # beta, a, c
    inputs = (x, y, *scalars)
    torch.testing.assert_close(fused_concat(*inputs, mirrored), _eager(*inputs, mirrored), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: fused_concat(*t, mirrored), inputs)
    assert torch.autograd.gradgradcheck(lambda *t: fused_concat(*t, mirrored), inputs)


@pytest.mark.parametrize("mirrored", [False, True], ids=["lipswish", "clipswish"])
def test_the_input_only_backward_gives_the_input_gradients(mirrored: bool) -> None:
    """Within ``input_gradients_only`` (the Neumann series' products) a backward without a graph gives
    the same ∂/∂x and ∂/∂y as eager autograd, and no gradients for β, a and c."""
    from model.fused import input_gradients_only

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    scalars = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.9, 0.7, 0.6)]
    g = torch.randn(2, 3 + 5 * (2 if mirrored else 1), 4, 4, dtype=torch.float64)
    expected = torch.autograd.grad(_eager(x, y, *scalars, mirrored), (x, y), g)
    with input_gradients_only():
        out = fused_concat(x, y, *scalars, mirrored)
        got = torch.autograd.grad(out, (x, y, *scalars), g, allow_unused=True)
    for e, o in zip(expected, got[:2]):
        torch.testing.assert_close(o, e, rtol=0, atol=1e-12)
    assert got[2:] == (None, None, None)


CASES = {
    "toy i-DenseNet, LipSwish, backprop through the series": (
        toy_config(blocks_per_scale=(2,), depth=2, growth=8), TrainConfig(data="moons", batch_size=64)),
    "digits i-DenseNet, CLipSwish, Neumann + memory-efficient": (
        model_config(input_shape=(1, 8, 8), n_levels=17, blocks_per_scale=(1, 1), depth=2, growth=8, fc_blocks=1,
                     activation="clipswish"), TrainConfig(data="digits", batch_size=16)),
    "1-1-1 i-DenseNet on 3 x 32 x 32, CLipSwish (three scales)": (
        model_config(blocks_per_scale=(1, 1, 1), depth=2, growth=8, fc_blocks=1),
        TrainConfig(data="cifar10", batch_size=4)),
}


def _loss_and_grads(model, x: torch.Tensor):  # noqa: ANN001
    torch.manual_seed(5)
    for block in model.modules():
        if isinstance(block, InvertibleResBlock):
            block.roulette_generator = torch.Generator().manual_seed(6)
    model.zero_grad(set_to_none=True)
    loss = model.score_from_output(*model(model_input(x, model, torch.device("cpu")))).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list(CASES))
def test_a_fused_step_computes_the_eager_loss_and_gradients(name: str, monkeypatch, calls) -> None:  # noqa: ANN001
    monkeypatch.setattr("model.dense.FUSED_MIN_ELEMENTS", 0)  # these small cases would otherwise run eagerly
    config, train = CASES[name]
    torch.manual_seed(0)
    model = build_model(config).train()
    gen = torch.Generator().manual_seed(1)
    if config.is_toy:
        x = torch.randn(64, 2, generator=gen)
    else:
        x = torch.randint(0, config.n_levels, (train.batch_size, *config.input_shape), dtype=torch.uint8,
                          generator=gen)
    model.initialize(model_input(x, model, torch.device("cpu")))
    TrainStep(model, train.replace(fused=False))
    eager_loss, eager_grads = _loss_and_grads(model, x)
    TrainStep(model, train.replace(fused=True))  # the switch every caller of TrainStep goes through
    assert all(layer.fused for layer in model.modules() if isinstance(layer, DenseLayer))
    fused_loss, fused_grads = _loss_and_grads(model, x)
    torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-6, atol=1e-6)
    assert fused_grads.keys() == eager_grads.keys() and len(eager_grads) > 10
    for n, g in eager_grads.items():  # float32 sums in another order: rounding relative to the gradient's size
        assert (fused_grads[n] - g).abs().max() <= 1e-4 * g.abs().max() + 1e-7, n
    assert calls["forward"] > 0 and calls["double_backward"] > 0  # the operator and its second derivatives ran


@pytest.fixture
def calls(monkeypatch):  # noqa: ANN001, ANN201
    """How often the fused forward and the compiled double backward run."""
    from model import fused

    counts = {"forward": 0, "double_backward": 0}
    forward, kernel = fused._forward, fused._kernel

    def counted_forward(*args):  # noqa: ANN002, ANN202
        counts["forward"] += 1
        return forward(*args)

    def counted_kernel(name: str):  # noqa: ANN202
        if name == "double_backward":
            counts["double_backward"] += 1
        return kernel(name)

    monkeypatch.setattr(fused, "_forward", counted_forward)
    monkeypatch.setattr(fused, "_kernel", counted_kernel)
    return counts


def test_small_inputs_take_the_eager_path(calls) -> None:  # noqa: ANN001
    """Below ``FUSED_MIN_ELEMENTS`` (a toy batch) a fused layer computes eagerly; above it, fused."""
    from model.dense import FUSED_MIN_ELEMENTS

    config, train = CASES["toy i-DenseNet, LipSwish, backprop through the series"]
    model = build_model(config).train()
    TrainStep(model, train.replace(fused=True))
    layer = next(m for m in model.modules() if isinstance(m, DenseLayer))
    layer(torch.randn(FUSED_MIN_ELEMENTS // 2 - 1, 2))
    assert calls["forward"] == 0
    layer(torch.randn(FUSED_MIN_ELEMENTS // 2, 2))
    assert calls["forward"] == 1


def test_the_default_fuses_only_where_it_was_measured_to_pay(monkeypatch) -> None:  # noqa: ANN001
    """``fused: null`` (the default): on for CIFAR10 and ImageNet32 on a CPU with a C++ compiler, off
    for toy data and digits, on a GPU (not yet measured there) and without a compiler; an explicit
    value wins; null round-trips."""
    monkeypatch.setenv("CXX", "g++")
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}" if name == "g++" else None)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [TrainConfig(data=d).fused_on(cpu) for d in ("moons", "digits", "cifar10", "imagenet32")] == [
        False, False, True, True]
    assert not TrainConfig(data="cifar10").fused_on(gpu)
    assert TrainConfig(data="digits", fused=True).fused_on(gpu) and not TrainConfig(data="cifar10", fused=False).fused_on(cpu)
    assert TrainConfig.from_dict(TrainConfig(data="cifar10").to_dict()).fused is None
    monkeypatch.setenv("CXX", "clang++")  # a compiler inductor would use that is not installed
    assert not TrainConfig(data="cifar10").fused_on(cpu)
