"""Activations of paper eq. 10, 11, 14 against closed forms and float64 reference constants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.activations import CLipSwish, LeakyLSwish, LipSwish, make_activation

BETA0 = 0.9740769842  # softplus(0.5)
T_STAR = 2.3993572805  # argmax of beta-scaled Jacobian norm (float64 reference)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convolutions are far slower with several threads on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _lipswish_ref(x: torch.Tensor, beta: float) -> torch.Tensor:
    return x / (1.0 + torch.exp(-beta * x)) / 1.1


def _grid(half_width: float, step: float) -> torch.Tensor:
    n = int(round(2 * half_width / step)) + 1
    return torch.linspace(-half_width, half_width, n, dtype=torch.float64)


def _clipswish_jacobian_norm(act: CLipSwish, x: torch.Tensor) -> torch.Tensor:
    """sqrt(dphi1/dx^2 + dphi2/dx^2) per point via autograd (eq. 13), x of shape (N,)."""
    x = x.clone().reshape(-1, 1).requires_grad_(True)
    y = act(x)  # (N, 2)
    (d1,) = torch.autograd.grad(y[:, 0].sum(), x, retain_graph=True)
    (d2,) = torch.autograd.grad(y[:, 1].sum(), x)
    return torch.sqrt(d1**2 + d2**2).reshape(-1)


def test_parameter_counts_and_init() -> None:
    counts = [sum(p.numel() for p in make_activation(n).parameters()) for n in ("lipswish", "clipswish", "leakylswish")]
    assert counts == [1, 1, 2]
    assert LipSwish().beta.item() == pytest.approx(BETA0, abs=1e-7)
    assert CLipSwish().beta.item() == pytest.approx(BETA0, abs=1e-7)
    leaky = LeakyLSwish()
    assert leaky.alpha.item() == pytest.approx(1 / (1 + math.exp(3)), abs=1e-7)
    assert leaky.beta.item() == pytest.approx(BETA0, abs=1e-7)
    # each module owns its own parameters
    a, b = LipSwish(), LipSwish()
    assert a.raw_beta is not b.raw_beta


def test_make_activation_types_and_error() -> None:
    assert type(make_activation("lipswish")) is LipSwish
    assert type(make_activation("clipswish")) is CLipSwish
    assert type(make_activation("leakylswish")) is LeakyLSwish
    assert make_activation("lipswish") is not make_activation("lipswish")
    with pytest.raises(ValueError) as err:
        make_activation("relu")
    for name in ("lipswish", "clipswish", "leakylswish"):
        assert name in str(err.value)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4, 6)])
def test_shapes(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    assert LipSwish()(x).shape == x.shape
    assert LeakyLSwish()(x).shape == x.shape
    out = CLipSwish()(x)
    assert out.shape == (shape[0], 2 * shape[1], *shape[2:])


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4, 6)])
def test_values_against_closed_forms(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = 3 * torch.randn(shape, dtype=torch.float64)
    ls = LipSwish().double()
    torch.testing.assert_close(ls(x), _lipswish_ref(x, BETA0), rtol=1e-9, atol=1e-12)
    cl = CLipSwish().double()
    c = shape[1]
    out = cl(x)
    torch.testing.assert_close(out[:, :c], _lipswish_ref(x, BETA0) / 1.004, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out[:, c:], _lipswish_ref(-x, BETA0) / 1.004, rtol=1e-9, atol=1e-12)
    lk = LeakyLSwish().double()
    al = 1 / (1 + math.exp(3))
    torch.testing.assert_close(lk(x), al * x + (1 - al) * _lipswish_ref(x, BETA0), rtol=1e-9, atol=1e-12)


def test_clipswish_lipschitz_constant_on_grid() -> None:
    """Float64 reference: max Jacobian norm 0.999965 +- 1e-6 at x = +-2.46321 (beta = softplus(0.5))."""
    act = CLipSwish().double()
    x = _grid(8.0, 1e-5)
    norms = _clipswish_jacobian_norm(act, x)
    pos, neg = x > 0, x < 0
    for mask in (pos, neg):
        i = torch.argmax(torch.where(mask, norms, torch.zeros_like(norms)))
        assert norms[i].item() == pytest.approx(1.0039650400326 / 1.004, abs=1e-6)
        assert abs(x[i].item()) == pytest.approx(2.463211, abs=2e-5)
    assert norms.max().item() < 1.0
    # known values at 0 and far out (float64 reference)
    assert norms[len(x) // 2].item() == pytest.approx(math.sqrt(2) * 0.5 / 1.1 / 1.004, abs=1e-9)


def test_clipswish_sup_independent_of_beta() -> None:
    act = CLipSwish().double()
    with torch.no_grad():
        act.raw_beta.fill_(math.log(math.expm1(5.0)))  # beta = 5
    x = _grid(2.0, 2e-6)
    norms = _clipswish_jacobian_norm(act, x)
    i = torch.argmax(norms)
    assert norms[i].item() == pytest.approx(1.0039650400326 / 1.004, abs=1e-6)
    assert abs(x[i].item()) == pytest.approx(T_STAR / 5, abs=1e-5)


def test_lipswish_derivative_extrema() -> None:
    act = LipSwish().double()
    x = _grid(10.0, 1e-5).requires_grad_(True)
    (d,) = torch.autograd.grad(act(x).sum(), x)
    i = torch.argmax(d)
    assert d[i].item() == pytest.approx(0.99985393, abs=1e-8)
    assert x[i].item() == pytest.approx(T_STAR / BETA0, abs=2e-5)
    assert d.min().item() == pytest.approx(-0.09076302, abs=1e-8)


@pytest.mark.parametrize("name", ["lipswish", "clipswish", "leakylswish"])
def test_random_pairs_are_contracted(name: str) -> None:
    torch.manual_seed(1)
    act = make_activation(name).double()
    with torch.no_grad():  # move off the init to test other parameter values too
        for p in act.parameters():
            p.add_(torch.randn_like(p))
    v, w = 4 * torch.randn(2, 20000, 16, dtype=torch.float64)
    ratio = (act(v) - act(w)).norm(dim=1) / (v - w).norm(dim=1)
    assert ratio.max().item() <= 1.0
    assert ratio.mean().item() > 0.3


@pytest.mark.parametrize("name", ["lipswish", "clipswish", "leakylswish"])
def test_gradients_reach_parameters(name: str) -> None:
    act = make_activation(name)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    act(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in act.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(isinstance(p, nn.Parameter) for p in act.parameters())
