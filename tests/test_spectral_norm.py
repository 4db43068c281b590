"""Spectral normalisation (paper eq. 2) against exact SVD / dense-operator norms."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

from model.spectral_norm import (
    SpectralNormConv2d,
    SpectralNormLinear,
    spectral_norm_layers,
    true_operator_norm,
    update_lipschitz,
)

COEFF = 0.98


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convolutions are far slower with several threads on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _dense_conv_norm(weight: torch.Tensor, c_in: int, hw: tuple[int, int], padding: int) -> float:
    """Independent exact norm: SVD of the conv's Jacobian built with torch.func.jacrev."""
    w = weight.detach().double()
    x0 = torch.zeros(1, c_in, *hw, dtype=torch.float64)
    jac = jacrev(lambda x: F.conv2d(x, w, padding=padding))(x0)
    n_in = c_in * hw[0] * hw[1]
    return float(torch.linalg.matrix_norm(jac.reshape(-1, n_in), ord=2))


def _scale_weight(layer: nn.Module, factor: float) -> None:
    with torch.no_grad():
        layer.weight.mul_(factor)


def _make(kind: str, **kw) -> SpectralNormLinear | SpectralNormConv2d:
    if kind == "linear":
        return SpectralNormLinear(24, 40, COEFF, **kw)
    if kind == "conv1x1":
        return SpectralNormConv2d(24, 40, 1, 0, (6, 6), COEFF, **kw)
    return SpectralNormConv2d(3, 16, 3, 1, (8, 8), COEFF, **kw)


KINDS = ["linear", "conv1x1", "conv3x3"]


def test_init_matches_pytorch_defaults() -> None:
    torch.manual_seed(3)
    ref = nn.Linear(24, 40)
    torch.manual_seed(3)
    lin = SpectralNormLinear(24, 40, COEFF)
    assert torch.equal(ref.weight, lin.weight) and torch.equal(ref.bias, lin.bias)
    torch.manual_seed(4)
    refc = nn.Conv2d(5, 7, 3, padding=1)
    torch.manual_seed(4)
    conv = SpectralNormConv2d(5, 7, 3, 1, (8, 8), COEFF)
    assert torch.equal(refc.weight, conv.weight) and torch.equal(refc.bias, conv.bias)
    assert SpectralNormLinear(3, 4, COEFF, bias=False).bias is None
    assert sum(p.numel() for p in conv.parameters()) == sum(p.numel() for p in refc.parameters())


def test_buffer_shapes_exist_at_construction() -> None:
    lin, c1, c3 = (_make(k) for k in KINDS)
    assert lin.u.shape == (40,) and lin.v.shape == (24,)
    assert c1.u.shape == (40,) and c1.v.shape == (24,)
    assert c3.u.shape == (1, 16, 8, 8) and c3.v.shape == (1, 3, 8, 8)
    for layer in (lin, c1, c3):
        sd = layer.state_dict()
        assert {"weight", "bias", "u", "v"} <= set(sd)
        assert torch.linalg.vector_norm(layer.u).item() == pytest.approx(1.0, abs=1e-5)


def test_true_operator_norm_helper_is_exact() -> None:
    torch.manual_seed(0)
    conv = SpectralNormConv2d(3, 16, 3, 1, (8, 8), COEFF)
    exact = _dense_conv_norm(conv.weight, 3, (8, 8), 1)
    assert true_operator_norm(conv, normalized=False) == pytest.approx(exact, rel=1e-10)
    # the power-iteration branch agrees with the dense branch
    assert true_operator_norm(conv, normalized=False, dense_limit=0) == pytest.approx(exact, rel=1e-5)
    lin = SpectralNormLinear(24, 40, COEFF)
    s = torch.linalg.svdvals(lin.weight.detach().double())[0].item()
    assert true_operator_norm(lin, normalized=False) == pytest.approx(s, rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_normalised_norm_at_coeff_when_raw_exceeds(kind: str) -> None:
    torch.manual_seed(1)
    layer = _make(kind)
    _scale_weight(layer, 3.0)
    raw = true_operator_norm(layer, normalized=False)
    assert raw > 1.5 * COEFF
    layer.refine(n_iterations=2000)
    assert layer.sigma().item() == pytest.approx(raw, rel=1e-4)
    norm = true_operator_norm(layer)
    assert norm <= COEFF * 1.01
    assert norm == pytest.approx(COEFF, rel=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_tolerance_mode_bound_after_construction(kind: str) -> None:
    """Construction-time tolerance refinement alone keeps the true norm within ~2% of coeff."""
    torch.manual_seed(2)
    layer = _make(kind)
    assert layer.sigma().item() <= true_operator_norm(layer, normalized=False) * (1 + 1e-5)  # lower bound
    assert true_operator_norm(layer) <= COEFF * 1.03


@pytest.mark.parametrize("kind", KINDS)
def test_weight_untouched_below_coeff(kind: str) -> None:
    torch.manual_seed(5)
    layer = _make(kind)
    _scale_weight(layer, 0.1)
    layer.refine(n_iterations=50)
    assert torch.equal(layer.normalized_weight(), layer.weight)


def test_conv_operator_norm_exceeds_reshaped_matrix_norm() -> None:
    """A fresh 3x3, 3->16 conv at 32x32: operator norm ~2x the reshaped-matrix norm."""
    torch.manual_seed(0)
    conv = SpectralNormConv2d(3, 16, 3, 1, (32, 32), COEFF)
    matrix = torch.linalg.matrix_norm(conv.weight.detach().double().reshape(16, -1), ord=2).item()
    op = true_operator_norm(conv, normalized=False)
    assert op > 1.7 * matrix
    assert conv.sigma().item() > 1.7 * matrix  # the layer's estimate is of the operator, not the matrix
    conv.refine(n_iterations=2000)
    assert conv.sigma().item() == pytest.approx(op, rel=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_refine_modes(kind: str) -> None:
    torch.manual_seed(6)
    layer = _make(kind, max_iters=1)  # barely initialised
    u0, v0 = layer.u.clone(), layer.v.clone()
    assert layer.refine(n_iterations=0) == 0
    assert torch.equal(layer.u, u0) and torch.equal(layer.v, v0)
    assert layer.refine(n_iterations=7) == 7
    assert not torch.equal(layer.u, u0)
    used = layer.refine(None, tol=1e-3, max_iters=200)
    assert 1 <= used < 200
    assert layer.refine(None, tol=1e-3, max_iters=200) <= 2  # warm start converges at once
    # a tight tolerance needs more iterations but still stops before the cap on these sizes
    assert layer.refine(None, tol=1e-7, max_iters=5000) < 5000


def test_update_lipschitz_refines_every_layer() -> None:
    torch.manual_seed(7)
    net = nn.Sequential(_make("conv3x3", max_iters=1), nn.Sequential(_make("conv1x1", max_iters=1)), _make("linear", max_iters=1))
    assert len(list(spectral_norm_layers(net))) == 3
    before = [layer.u.clone() for layer in spectral_norm_layers(net)]
    update_lipschitz(net, n_iterations=1000)
    for layer, u0 in zip(spectral_norm_layers(net), before):
        assert not torch.equal(layer.u, u0)
        assert layer.sigma().item() == pytest.approx(true_operator_norm(layer, normalized=False), rel=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_functional_and_keeps_buffers(kind: str) -> None:
    torch.manual_seed(8)
    layer = _make(kind)
    _scale_weight(layer, 2.0)
    x = torch.randn(4, 24) if kind == "linear" else torch.randn(4, layer.in_channels, *layer.input_hw)
    u0, v0 = layer.u.clone(), layer.v.clone()
    y = layer(x)
    y.square().sum().backward()
    assert torch.equal(layer.u, u0) and torch.equal(layer.v, v0)  # forward/backward never iterate
    w_hat = layer.weight.detach() / (layer.sigma().detach() / COEFF)
    if kind == "linear":
        ref = F.linear(x, w_hat, layer.bias)
    else:
        ref = F.conv2d(x, w_hat, layer.bias, padding=layer.padding)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_conv_rejects_other_input_size() -> None:
    conv = _make("conv3x3")
    with pytest.raises(ValueError):
        conv(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("kind", KINDS)
def test_sigma_gradient_equals_bilinear_form(kind: str) -> None:
    """sigma = u^T A(W) v; its W-gradient must match the direct conv/matmul expression."""
    torch.manual_seed(9)
    layer = _make(kind, dtype=torch.float64)
    w = layer.weight.detach().clone().requires_grad_(True)
    if kind == "conv3x3":
        direct = torch.dot(layer.u.reshape(-1), F.conv2d(layer.v, w, padding=1).reshape(-1))
    else:
        direct = torch.dot(layer.u, w.reshape(w.shape[0], -1) @ layer.v)
    (g_ref,) = torch.autograd.grad(direct, w)
    s = layer.sigma()
    (g,) = torch.autograd.grad(s, layer.weight)
    assert s.item() == pytest.approx(direct.item(), rel=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_through_normalisation(kind: str) -> None:
    torch.manual_seed(10)
    layer = _make(kind, dtype=torch.float64)
    _scale_weight(layer, 2.0)  # clamp active: the gradient includes the d sigma / dW term
    x = torch.randn(2, 24, dtype=torch.float64) if kind == "linear" else torch.randn(2, layer.in_channels, *layer.input_hw, dtype=torch.float64)
    b = layer.bias.detach()

    def f(w: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (layer.weight.detach().clone().requires_grad_(True),))


def test_conv_sigma_cache_follows_buffer_changes() -> None:
    torch.manual_seed(11)
    conv = SpectralNormConv2d(4, 6, 3, 1, (5, 5), COEFF, max_iters=1)

    def direct() -> float:
        return torch.dot(conv.u.reshape(-1), F.conv2d(conv.v, conv.weight, padding=1).reshape(-1)).item()

    assert conv.sigma().item() == pytest.approx(direct(), rel=1e-6)
    conv.refine(n_iterations=3)
    assert conv.sigma().item() == pytest.approx(direct(), rel=1e-6)
    with torch.no_grad():
        conv.u.copy_(torch.randn_like(conv.u))
    assert conv.sigma().item() == pytest.approx(direct(), rel=1e-6)
    other = SpectralNormConv2d(4, 6, 3, 1, (5, 5), COEFF)
    conv.load_state_dict(other.state_dict())
    assert conv.sigma().item() == pytest.approx(direct(), rel=1e-6)
    assert conv.sigma().item() == pytest.approx(other.sigma().item(), rel=1e-6)
    conv.double()
    assert conv.sigma().dtype == torch.float64
    assert conv.sigma().item() == pytest.approx(direct(), rel=1e-6)
    clone = copy.deepcopy(conv)
    with torch.no_grad():
        clone.v.mul_(-1.0)
    assert clone.sigma().item() == pytest.approx(-conv.sigma().item(), rel=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind: str) -> None:
    torch.manual_seed(12)
    a = _make(kind)
    _scale_weight(a, 2.5)
    a.refine(n_iterations=20)
    torch.manual_seed(13)
    b = _make(kind)  # different weights and vectors
    b.load_state_dict(a.state_dict())
    for name in ("weight", "bias", "u", "v"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    x = torch.randn(3, 24) if kind == "linear" else torch.randn(3, a.in_channels, *a.input_hw)
    assert torch.equal(a(x), b(x))
