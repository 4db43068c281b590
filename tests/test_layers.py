"""Logit transform, ActNorm, squeeze: exact inverses, exact log-determinants, the bpd convention."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jacrev

from model.layers import ActNorm, Flatten, LogitTransform, Squeeze


def _exact_logdet(layer, x):
    """log|det| of the full Jacobian of one sample, by autograd."""
    jac = jacrev(lambda v: layer(v.view(1, *x.shape[1:]))[0].flatten())(x[:1].flatten())
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("layer_fn", [lambda: LogitTransform(0.05), lambda: ActNorm(2), Squeeze])
def test_inverse_and_logdet_are_exact(layer_fn):
    torch.manual_seed(0)
    layer = layer_fn().double()
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    if isinstance(layer, ActNorm):
        layer(torch.randn(8, 2, 4, 4, dtype=torch.float64) * 3 + 1)  # data init
    y, logdet = layer(x)
    assert torch.allclose(layer.inverse(y), x, atol=1e-12)
    assert logdet.shape == (3,)
    assert torch.allclose(logdet[0], _exact_logdet(layer, x), atol=1e-9)


def test_actnorm_data_init_standardises_with_variance_floor():
    torch.manual_seed(0)
    x = torch.randn(256, 3, 4, 4) * torch.tensor([2.0, 0.1, 1.0]).view(1, 3, 1, 1) + 5
    norm = ActNorm(3)
    y, _ = norm(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    std = y.std((0, 2, 3))
    assert abs(std[0] - 1) < 1e-3 and abs(std[2] - 1) < 2e-2
    # channel 1 has variance 0.01 < 0.2: scaled by 1/sqrt(0.2) only
    assert abs(std[1] - 0.1 / math.sqrt(0.2)) < 5e-3
    assert bool(norm.initialized)
    # a second batch does not re-initialise
    bias = norm.bias.clone()
    norm(torch.randn(4, 3, 4, 4))
    assert torch.equal(bias, norm.bias)


def test_actnorm_on_vectors():
    norm = ActNorm(5).double()
    x = torch.randn(10, 5, dtype=torch.float64)
    y, logdet = norm(x)
    assert torch.allclose(norm.inverse(y), x)
    assert torch.allclose(logdet, norm.weight.sum().expand(10))


def test_squeeze_is_pixel_unshuffle_channel_order():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    # output channel c*4 + 2*dy + dx holds pixel (2i + dy, 2j + dx)
    assert y[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]


def test_flatten_round_trip():
    f = Flatten((2, 3, 3))
    x = torch.randn(4, 2, 3, 3)
    y, ld = f(x)
    assert y.shape == (4, 18) and torch.equal(f.inverse(y), x) and torch.equal(ld, torch.zeros(4))
