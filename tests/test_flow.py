"""The assembled flows: exact parameter counts of the paper's models, invertibility, the bpd and
toy-NLL conventions end to end, and a short toy training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import build_model, model_config, toy_config
from model.data import TOY_IDENTITY_NLL, toy_sample
from model.iresblock import InvertibleResBlock
from studies.toy import evaluate_toy, train_toy
from reference_counts import CIFAR10_COUNTS, IMAGENET32_COUNTS, TOY_COUNTS

PAPER_COUNTS = CIFAR10_COUNTS
PAPER_COUNTS_LARGE = IMAGENET32_COUNTS  # 32-32-32 models: about 10 s each to build


@pytest.mark.parametrize("kwargs,expected", PAPER_COUNTS)
def test_parameter_counts_of_the_paper_models(kwargs, expected):
    assert build_model(model_config(**kwargs)).num_parameters() == expected


@pytest.mark.slow
@pytest.mark.parametrize("kwargs,expected", PAPER_COUNTS_LARGE)
def test_parameter_counts_of_the_imagenet32_models(kwargs, expected):
    assert build_model(model_config(**kwargs)).num_parameters() == expected


@pytest.mark.parametrize("kwargs,expected", TOY_COUNTS)
def test_parameter_counts_of_the_toy_models(kwargs, expected):
    assert build_model(toy_config(**kwargs)).num_parameters() == expected


def _silence_blocks(model):
    """Make every g ≡ 0 (zero last layer), so the flow is the logit/identity map."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, InvertibleResBlock):
                last = m.net[-1]
                last.weight.zero_()
                last.bias.zero_()


def test_identity_flow_bpd_of_a_mid_grey_image():
    """All pixels 128 without noise: x = 0.5, y = 0, bpd = 8 − (log 3.6 − ½ log 2π)/ln 2."""
    cfg = model_config(family="idensenet", activation="lipswish", blocks_per_scale=(1, 1), depth=1,
                      growth=4, input_shape=(3, 8, 8), actnorm=False, fc_blocks=1)
    model = build_model(cfg)
    _silence_blocks(model)
    x = torch.full((2, 3, 8, 8), 128 / 256)
    for mode in (model.train, model.eval):
        mode()
        bpd = model.bits_per_dim(x)
        assert torch.allclose(bpd, torch.full((2,), 7.4777511582), atol=1e-5)


def test_identity_toy_flow_nll_on_moons():
    model = build_model(toy_config(blocks_per_scale=(2,)))
    _silence_blocks(model)
    nll = evaluate_toy(model, "moons", 10_000, np.random.default_rng(1))
    assert abs(nll - TOY_IDENTITY_NLL["moons"]) < 3 * 0.015


@pytest.mark.parametrize("family,activation", [("idensenet", "clipswish"), ("resflow", "lipswish"),
                                               ("idensenet", "leakylswish")])
def test_multiscale_flow_inverts(family, activation):
    torch.manual_seed(0)
    cfg = model_config(family=family, activation=activation, blocks_per_scale=(2, 1), depth=2,
                      growth=8, hidden=16, fc_hidden=16, input_shape=(3, 8, 8), fc_blocks=1)
    model = build_model(cfg)
    x = torch.rand(4, 3, 8, 8) * 0.95 + 0.025
    model.initialize(x)
    model.update_lipschitz(50)
    model.eval()
    with torch.no_grad():
        z, _ = model(x)
        assert z.shape == (4, 192)
        x_rec = model.inverse(z)
    assert (x_rec - x).abs().max() < 1e-4


def test_toy_flow_inverts():
    torch.manual_seed(0)
    model = build_model(toy_config())
    model.eval()
    x = toy_sample("moons", 256, np.random.default_rng(0))
    with torch.no_grad():
        z, _ = model(x)
        assert (model.inverse(z) - x).abs().max() < 1e-4


def test_reset_concat_restores_eta_init():
    model = build_model(toy_config(eta_init=(0.5, 2.0)))
    layer = model.concat_layers()[0]
    with torch.no_grad():
        layer.K.add_(1.0)
    model.reset_concat()
    assert layer.K.tolist() == [0.5, 2.0]


def test_short_toy_training_beats_the_identity_flow():
    torch.manual_seed(0)
    cfg = toy_config(blocks_per_scale=(4,))
    _, result = train_toy(cfg, "moons", iterations=150, batch_size=250, seed=0)
    # the identity flow scores 3.91 nats; the true density 2.395
    assert result.test_nll < 3.3
