"""Dense layers with learnable concatenation (paper §3.3, eq. 9) and the dense block g (eq. 4):
Lipschitz bounds measured on the true Jacobian, and the η̂ normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jacrev

from model.activations import make_activation
from model.dense import DenseConvNet, DenseFCNet, DenseLayer
from model.spectral_norm import SpectralNormConv2d, SpectralNormLinear


@pytest.fixture(autouse=True)
def _float64_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _max_jacobian_norm(fn, shape, n_points=8, seed=0):
    """Largest spectral norm of J_fn over random points (a lower bound on Lip(fn))."""
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for _ in range(n_points):
        x = torch.randn(1, *shape, generator=g, dtype=torch.float64) * 2
        jac = jacrev(lambda v: fn(v.view(1, *shape)).flatten())(x.flatten())
        best = max(best, torch.linalg.matrix_norm(jac, ord=2).item())
    return best


def test_eta_hat_lies_on_the_lip_coeff_circle():
    layer = DenseLayer(torch.nn.Identity(), eta_init=(0.3, 2.0), lip_coeff=0.98)
    eta = layer.eta_hat()
    assert math.isclose(eta.norm().item(), 0.98, rel_tol=1e-6)
    softplus = lambda k: math.log1p(math.exp(k)) + 0.1
    assert math.isclose((eta[0] / eta[1]).item(), softplus(0.3) / softplus(2.0), rel_tol=1e-6)
    # equal K gives the fixed weighting 0.98/sqrt(2) (also the value with LC off)
    fixed = DenseLayer(torch.nn.Identity(), learnable=False).eta_hat()
    assert torch.allclose(fixed, torch.full((2,), 0.98 / math.sqrt(2)))


def test_lc_off_keeps_k_as_a_buffer():
    layer = DenseLayer(torch.nn.Identity(), learnable=False)
    assert [n for n, _ in layer.named_parameters()] == []
    assert "K" in dict(layer.named_buffers())


@pytest.mark.parametrize("activation", ["lipswish", "clipswish", "leakylswish"])
def test_lc_dense_conv_layer_is_lip_coeff_lipschitz(activation):
    torch.manual_seed(0)
    a = 2 if activation == "clipswish" else 1
    conv = SpectralNormConv2d(3, 8 // a, 3, 1, (4, 4), coeff=0.98, max_iters=2000, tol=1e-9).double()
    layer = DenseLayer(torch.nn.Sequential(conv, make_activation(activation)), eta_init=(0.2, 1.7),
                       lip_coeff=0.9).double()
    # make the transformed branch dominate and check the bound eq. 9 gives
    assert _max_jacobian_norm(layer, (3, 4, 4)) <= 0.9 * 1.01


def test_dense_conv_block_is_a_contraction():
    torch.manual_seed(0)
    net = DenseConvNet(2, depth=3, growth=4, activation="clipswish", input_hw=(4, 4)).double()
    net.apply(lambda m: m.refine(n_iterations=500) if isinstance(m, SpectralNormConv2d) else None)
    bound = 0.98 ** 3 * 0.98  # three dense layers (lip_coeff) and the 1x1 conv (sn_coeff)
    assert _max_jacobian_norm(net, (2, 4, 4)) <= bound * 1.01


def test_dense_fc_block_is_a_contraction():
    torch.manual_seed(0)
    net = DenseFCNet(6, depth=2, growth=4, activation="lipswish", width=5).double()
    net.apply(lambda m: m.refine(n_iterations=500) if isinstance(m, SpectralNormLinear) else None)
    assert _max_jacobian_norm(net, (6,)) <= 0.98 ** 4 * 1.01


def test_dense_layer_output_channels():
    net = DenseConvNet(3, depth=3, growth=6, activation="clipswish", input_hw=(8, 8))
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    assert net[2](torch.randn(1, 15, 8, 8)).shape == (1, 21, 8, 8)
