"""The per-worker loop's pieces that need no Ray: the parameter EMA and the scores."""

from __future__ import annotations

import math

import torch
from torch import nn

from sweeper.loop_parts import ParamEMA, score_from_output


def test_ema_follows_its_recurrence_and_swaps_back() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    ema = ParamEMA(net, 0.9)
    expected = {n: p.detach().clone() for n, p in net.named_parameters()}
    ema.update()  # the shadow starts as a copy
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        for n, p in net.named_parameters():
            expected[n] = 0.9 * expected[n] + 0.1 * p.detach()
    current = {n: p.detach().clone() for n, p in net.named_parameters()}
    for n, s in ema.shadow.items():
        torch.testing.assert_close(s, expected[n], rtol=1e-6, atol=1e-6)
    with ema.swapped_in():
        for n, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), expected[n], rtol=1e-6, atol=1e-6)
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), current[n])


def test_scores_are_nats_for_toy_data_and_bits_per_dimension_for_images() -> None:
    """bpd = −(log p(x) − D·log n)/(D·ln 2) for dequantised images, −log p(x) in nats for toy data."""
    d, n = 12, 256
    z = torch.full((2, d), 0.25)
    logdet = torch.tensor([1.5, -0.5])
    got = score_from_output(z, logdet, is_toy=False, n_levels=n)
    log_p = -0.5 * (z.pow(2).sum(1) + d * math.log(2 * math.pi)) + logdet
    torch.testing.assert_close(got, -(log_p - d * math.log(n)) / (d * math.log(2)))
    nats = score_from_output(z, logdet, is_toy=True, n_levels=None)
    torch.testing.assert_close(nats, -log_p)
