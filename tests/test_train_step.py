"""The one training step (model/train_step.py): the parameter EMA, the scores, and a step against a
step written out in the authors' order with the per-tensor library calls."""

from __future__ import annotations

import math

import pytest

import torch
from torch import nn

from model.config import model_config, toy_config
from model.flow import build_model
from model.train_config import TrainConfig
from model.train_step import ParamEMA, TrainStep


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
    toy = build_model(toy_config(blocks_per_scale=(1,)))
    z, logdet = torch.zeros(3, 2), torch.zeros(3)
    torch.testing.assert_close(toy.score_from_output(z, logdet), torch.full((3,), 1.8378770664093453))
    image = build_model(model_config(input_shape=(3, 4, 4), blocks_per_scale=(1,), depth=1, growth=4, fc_blocks=0))
    z = torch.zeros(2, 48)
    torch.testing.assert_close(image.score_from_output(z, torch.zeros(2)), torch.full((2,), 9.325748064736159))
    # each nat of log-det is 1/(D ln 2) bits per dimension fewer
    shifted = image.score_from_output(z, torch.full((2,), 48 * math.log(2)))
    torch.testing.assert_close(shifted, torch.full((2,), 8.325748064736159))


IMAGE = model_config(input_shape=(1, 8, 8), n_levels=17, blocks_per_scale=(1,), depth=2, growth=8, fc_blocks=1,
                    fc_width=8, fc_growth=4, activation="lipswish")


def _reference_step(model, optimizer, ema, params, batch, lr, clip, hold, itr, warmup):
    """The authors' order, written out with the per-tensor library calls."""
    from model.data import dequantize

    for group in optimizer.param_groups:
        group["lr"] = lr * min((itr + 1) / warmup, 1.0) if warmup else lr
    loss = model.bits_per_dim(dequantize(batch, model.config.n_levels)).mean()
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(params, clip, foreach=False)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if hold:
        model.reset_concat()
    model.update_lipschitz(model.config.sn_train_iters)
    with torch.no_grad():
        if not ema:
            ema.update({n: p.detach().clone() for n, p in model.named_parameters()})
        else:
            for n, p in model.named_parameters():
                ema[n].mul_(0.9).add_(p.detach(), alpha=0.1)
    return float(loss.detach())


@pytest.mark.parametrize("hold", [False, True])
def test_step_matches_the_authors_order_written_out(hold: bool) -> None:
    """Three steps of TrainStep (warm-up, clip 0.05 so it binds, EMA 0.9) against the reference: the
    same losses, parameters, EMA and (with the hold) the concatenation back at its initial K."""
    train = TrainConfig(data="digits", lr=3e-3, warmup_iters=2, grad_clip=0.05, ema_decay=0.9)
    torch.manual_seed(0)
    a = build_model(IMAGE)
    b = build_model(IMAGE)
    b.load_state_dict(a.state_dict())
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 17, (8, 1, 8, 8), dtype=torch.uint8, generator=gen) for _ in range(3)]
    step = TrainStep(a, train)
    params = [p for p in b.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=train.lr, betas=train.betas, foreach=False)
    ema: dict = {}
    for i, batch in enumerate(batches):
        torch.manual_seed(10 + i)
        got = step(batch, hold_concat=hold)
        torch.manual_seed(10 + i)
        want = _reference_step(b, opt, ema, params, batch, train.lr, train.grad_clip, hold, i, train.warmup_iters)
        assert got.finite and got.loss == pytest.approx(want, rel=1e-6)
        assert got.lr == pytest.approx(train.lr * min((i + 1) / 2, 1.0))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
        torch.testing.assert_close(step.ema.shadow[n], ema[n], rtol=1e-5, atol=1e-6, msg=n)
    ks = [layer.K.detach() for layer in a.concat_layers()]
    assert all(torch.equal(k, torch.ones(2)) for k in ks) == hold
    assert step.iteration == 3


def test_non_finite_step_changes_nothing() -> None:
    torch.manual_seed(0)
    model = build_model(IMAGE)
    step = TrainStep(model, TrainConfig(data="digits"))
    batch = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    model.initialize(batch.float() / 17)  # the data-dependent ActNorm start, before the weights go bad
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = step(batch)
    assert not result.finite and step.iteration == 0 and not step.ema.shadow
    for n, p in model.named_parameters():
        assert torch.equal(p.detach().nan_to_num(), before[n].nan_to_num()), n
        assert p.grad is None
