"""The fast paths of model/ compute the same maths as the direct formulas (float64, a few ulps).

Each check lives in ``tests/fast_path_checks.py``; here every one of them
must hold within 1e-9: folded activation scales, the dense layer's folded concatenation weight, the
power series summed before the probe product, the batched ``update_lipschitz`` against ``refine``
layer by layer, and channels-last against the contiguous layout.
"""

from __future__ import annotations

import copy

import pytest
import torch

import fast_path_checks as equivalence
from model.config import toy_config
from model.flow import build_model
from model.spectral_norm import spectral_norm_layers, update_lipschitz

CHECKS = [
    equivalence.check_activations,
    equivalence.check_dense_layer,
    equivalence.check_power_series,
    equivalence.check_update_lipschitz,
    equivalence.check_memory_format,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_fast_path_matches_the_direct_formula(check) -> None:  # type: ignore[no-untyped-def]
    deviations = check()
    assert deviations, "the check compared nothing"
    worst = {k: v for k, v in deviations.items() if not v <= equivalence.BOUND}
    assert not worst, worst


def test_grouped_update_differs_from_no_update() -> None:
    """Guard for the check above: the batched iteration does move the vectors (it is not a no-op)."""
    torch.manual_seed(0)
    model = build_model(toy_config()).double()
    with torch.no_grad():
        for q in model.parameters():
            q.add_(0.05 * torch.randn_like(q))
    before = copy.deepcopy(model)
    update_lipschitz(model, None, tol=1e-6, max_iters=50)
    moved = max(float((a.u - b.u).abs().max()) for a, b in zip(spectral_norm_layers(model), spectral_norm_layers(before)))
    assert moved > 1e-6


def test_no_grad_weight_cache_follows_weight_and_vector_changes() -> None:
    """Under no_grad W_hat (eq. 2) is cached; any in-place change of W, u or v must be seen."""
    from model.spectral_norm import SpectralNormConv2d

    torch.manual_seed(1)
    layer = SpectralNormConv2d(3, 8, 3, 1, (6, 6), 0.9)
    with torch.no_grad():
        layer.weight.mul_(5.0)  # far above the coefficient: the normalisation is active
        first = layer.normalized_weight()
        assert layer.normalized_weight() is first  # cached
        layer.weight.mul_(0.5)
        torch.testing.assert_close(layer.normalized_weight(), layer._compute_normalized_weight(), rtol=0, atol=0)
        layer.refine(3)  # moves u and v
        torch.testing.assert_close(layer.normalized_weight(), layer._compute_normalized_weight(), rtol=0, atol=0)
    update_lipschitz(layer, 1)
    assert "_w_hat" not in layer.__dict__  # the refresh after an optimiser step frees the cache


def test_actnorm_flag_is_read_again_after_loading_an_uninitialised_state() -> None:
    from model.layers import ActNorm

    fresh = ActNorm(3)
    used = ActNorm(3)
    x = torch.randn(16, 3) * 4 + 2
    used(x)  # data-dependent initialisation
    used.load_state_dict(fresh.state_dict())  # back to "not initialised"
    z, _ = used(x)  # must initialise again from this batch: zero mean per feature
    torch.testing.assert_close(z.mean(0), torch.zeros(3), rtol=0, atol=1e-5)


@pytest.mark.parametrize("linear_first", [True, False])
def test_linear_and_pointwise_conv_layers_share_one_batched_refresh(linear_first: bool) -> None:
    """A Linear and a 1x1 convolution of the same shape fall into one group (both are matrices); the
    batched iteration must end where each layer's own ``refine`` does, whichever comes first."""
    from torch import nn

    from model.spectral_norm import SpectralNormConv2d, SpectralNormLinear

    torch.manual_seed(5)
    layers = [SpectralNormLinear(24, 40, 0.9), SpectralNormConv2d(24, 40, 1, 0, (6, 6), 0.9)]
    net = nn.Sequential(*(layers if linear_first else layers[::-1])).double()
    ref = copy.deepcopy(net)
    update_lipschitz(net, 7)
    for layer in spectral_norm_layers(ref):
        layer.refine(7)
    for a, b in zip(spectral_norm_layers(net), spectral_norm_layers(ref)):
        torch.testing.assert_close(a.u, b.u, rtol=0, atol=1e-12)
        torch.testing.assert_close(a.v, b.v, rtol=0, atol=1e-12)
