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


def test_scores_at_the_origin_have_their_closed_forms() -> None:
    """z = 0, log|det| = 0: toy NLL = (D/2)·ln 2π nats; images with n levels: bpd = log₂ n + ½·log₂ 2π."""
    z, logdet = torch.zeros(3, 2), torch.zeros(3)
    torch.testing.assert_close(score_from_output(z, logdet, is_toy=True, n_levels=None),
                               torch.full((3,), 1.8378770664093453))
    z = torch.zeros(2, 12)
    torch.testing.assert_close(score_from_output(z, torch.zeros(2), is_toy=False, n_levels=256),
                               torch.full((2,), 9.325748064736159))
    # each nat of log-det is 1/(D ln 2) bits per dimension fewer
    shifted = score_from_output(z, torch.full((2,), 12 * math.log(2)), is_toy=False, n_levels=256)
    torch.testing.assert_close(shifted, torch.full((2,), 8.325748064736159))


def test_gradient_norm_and_clipping_match_clip_grad_norm() -> None:
    from sweeper.train_loop import _grad_norm_and_clip

    torch.manual_seed(2)
    for max_norm in (None, 0.5, 1e6):
        a, b = nn.Linear(5, 3), nn.Linear(5, 3)
        b.load_state_dict(a.state_dict())
        x = torch.randn(7, 5)
        a(x).square().sum().backward()
        b(x).square().sum().backward()
        norm = _grad_norm_and_clip(list(a.parameters()), max_norm)
        ref = torch.nn.utils.clip_grad_norm_(list(b.parameters()), max_norm or float("inf"))
        torch.testing.assert_close(norm, ref)
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad)
