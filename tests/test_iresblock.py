"""InvertibleResBlock: fixed-point inverse, train/eval log-det paths against exact answers,
memory-efficient gradients, graph hygiene under no_grad, and the authors' two extra parameters."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from model.iresblock import InvertibleResBlock
from model.logdet import EstimatorSettings

torch.set_num_threads(1)
DT = torch.float64


def _scale(layer: nn.Module, in_shape: tuple[int, ...], target: float) -> None:
    """Rescale a linear/conv layer's weight so its operator norm (bias off) equals ``target``."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=DT).reshape(n, *in_shape)
    with torch.no_grad():
        out = layer(basis) - layer(torch.zeros_like(basis))
        layer.weight.mul_(target / torch.linalg.matrix_norm(out.reshape(n, -1), ord=2))


def contractive_mlp(d: int, lip: float = 0.5, hidden: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d)).to(DT)
    _scale(net[0], (d,), math.sqrt(lip))
    _scale(net[2], (hidden,), math.sqrt(lip))
    return net


def contractive_conv(c: int = 2, hw: int = 2, lip: float = 0.5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, c, 3, padding=1)).to(DT)
    _scale(net[0], (c, hw, hw), math.sqrt(lip))
    _scale(net[2], (4, hw, hw), math.sqrt(lip))
    return net


def exact_reference(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = []
    for xb in x.detach():
        jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], xb)
        d = xb.numel()
        out.append(torch.linalg.slogdet(torch.eye(d, dtype=DT) + jac.reshape(d, d))[1])
    return torch.stack(out)


def _block(net: nn.Module, **kw) -> InvertibleResBlock:
    return InvertibleResBlock(net, EstimatorSettings(**kw)).to(DT)


# ------------------------------------------------------------------------ inverse
@pytest.mark.parametrize("make,shape", [(lambda: contractive_mlp(2, lip=0.9), (2,)),
                                        (lambda: contractive_mlp(6, lip=0.7), (6,)),
                                        (lambda: contractive_conv(3, 4, lip=0.8), (3, 4, 4))])
def test_inverse_recovers_input(make, shape):
    block = _block(make())
    x = torch.randn(7, *shape, dtype=DT) * 2
    for mode in (block.train, block.eval):
        mode()
        with torch.no_grad():
            y, _ = block(x)
        assert torch.allclose(block.inverse(y, atol=1e-14, rtol=1e-14), x, atol=1e-6)
        assert torch.allclose(block.inverse(y, atol=1e-20, rtol=1e-20), x, atol=1e-10)
        # the default (authors') tolerance stops once the step is below ~sqrt(2e-5 * |y|)
        assert torch.allclose(block.inverse(y), x, atol=1e-1)


def test_inverse_warns_when_it_runs_out_of_iterations(caplog):
    block = _block(contractive_mlp(2, lip=0.9))
    y = torch.randn(4, 2, dtype=DT)
    with caplog.at_level(logging.WARNING, logger="model.iresblock"):
        block.inverse(y, atol=0.0, rtol=0.0, max_iters=3)
    assert "3 iterations" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model.iresblock"):
        block.inverse(y, atol=1e-12, rtol=1e-12)
    assert caplog.text == ""


# ------------------------------------------------------------------------ log-det paths
def test_eval_on_2d_vectors_is_exact_and_detached_under_no_grad():
    net = contractive_mlp(2, lip=0.9)
    block = _block(net).eval()
    x = torch.randn(9, 2, dtype=DT)
    with torch.no_grad():
        y, ld = block(x)
    assert not y.requires_grad and not ld.requires_grad and ld.shape == (9,)
    assert torch.allclose(ld, exact_reference(net, x), atol=1e-12)
    assert torch.allclose(y, x + net(x), atol=1e-14)
    assert block.last_n_terms == 0
    # with grad mode on the exact log-det is differentiable in x and θ
    xr = x.clone().requires_grad_(True)
    _, ld = block(xr)
    ld.sum().backward()
    assert xr.grad is not None and net[0].weight.grad is not None


def test_brute_force_trains_with_the_exact_logdet():
    net = contractive_conv()
    block = _block(net, brute_force=True).train()
    x = torch.randn(3, 2, 2, 2, dtype=DT, requires_grad=True)
    _, ld = block(x)
    assert torch.allclose(ld, exact_reference(net, x), atol=1e-12)
    ld.sum().backward()
    assert x.grad is not None and net[2].weight.grad is not None


def test_eval_on_images_uses_many_exact_terms():
    """Eval: 20 exact terms + roulette, one probe per sample; the mean over probes is within 3 SE."""
    net = contractive_conv(lip=0.6)
    block = _block(net, n_dist="poisson").eval()
    torch.manual_seed(0)
    x0 = torch.randn(1, 2, 2, 2, dtype=DT)
    x = x0.expand(3000, 2, 2, 2).contiguous()
    with torch.no_grad():
        _, ld = block(x)
    assert not ld.requires_grad and block.last_n_terms >= 20
    ref = exact_reference(net, x0)[0]
    assert abs(ld.mean() - ref) < 3 * ld.std() / math.sqrt(len(ld))


@pytest.mark.parametrize("n_dist", ["poisson", "geometric"])
def test_training_estimate_is_unbiased_without_neumann(n_dist):
    net = contractive_mlp(3, lip=0.5)
    block = _block(net, n_dist=n_dist, neumann_grad=False, mem_eff=False).train()
    torch.manual_seed(1)
    x0 = torch.randn(1, 3, dtype=DT)
    x = x0.expand(16, 3).contiguous()
    means, terms = [], []
    for _ in range(300):
        _, ld = block(x)
        assert ld.grad_fn is not None
        means.append(ld.detach().mean())
        terms.append(block.last_n_terms)
    means = torch.stack(means)
    ref = exact_reference(net, x0)[0]
    assert abs(means.mean() - ref) < 3 * means.std() / math.sqrt(len(means))
    assert min(terms) >= 2 and len(set(terms)) > 2  # a fresh N for every minibatch


def test_same_seed_same_estimate():
    block = _block(contractive_conv(), mem_eff=False).train()
    x = torch.randn(4, 2, 2, 2, dtype=DT)
    torch.manual_seed(11)
    a = block(x)[1]
    n_a = block.last_n_terms
    torch.manual_seed(11)
    b = block(x)[1]
    assert torch.equal(a, b) and block.last_n_terms == n_a


@pytest.mark.parametrize("neumann", [True, False])
@pytest.mark.parametrize("make,shape", [(lambda: contractive_mlp(4), (4,)),
                                        (lambda: contractive_conv(), (2, 2, 2))])
def test_memory_efficient_block_matches_plain_block(neumann, make, shape):
    """Same seed ⇒ same probe and N: equal outputs and equal gradients for x and every parameter of g."""
    net = make()
    x0 = torch.randn(6, *shape, dtype=DT)
    w_y = torch.randn_like(x0)

    def run(mem_eff: bool):
        block = _block(net, neumann_grad=neumann, mem_eff=mem_eff).train()
        block.zero_grad()
        x = x0.clone().requires_grad_(True)
        torch.manual_seed(21)
        y, ld = block(x)
        ((y * w_y).sum() + ld.mean()).backward()
        grads = [x.grad] + [p.grad for p in net.parameters()]
        assert block.geom_p.grad is None and block.lamb.grad is None
        return y.detach(), ld.detach(), grads, block.last_n_terms

    ya, la, ga, na = run(True)
    yb, lb, gb, nb = run(False)
    assert na == nb
    assert torch.allclose(ya, yb, atol=1e-14) and torch.allclose(la, lb, atol=1e-13)
    for a, b in zip(ga, gb):
        assert a is not None and b is not None
        assert torch.allclose(a, b, atol=1e-12)


def test_memory_efficient_gradient_reaches_the_spectral_norm_path():
    """Parameters reached only through a reparametrisation (W / max(1, ‖W‖/c)) still get gradients."""

    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 3, dtype=DT))

        def forward(self, x):
            w = self.weight / torch.clamp(torch.linalg.matrix_norm(self.weight, ord=2) / 0.7, min=1.0)
            return torch.tanh(x @ w.T)

    torch.manual_seed(0)
    net = Normed()
    block = InvertibleResBlock(net, EstimatorSettings()).to(DT).train()
    x = torch.randn(5, 3, dtype=DT, requires_grad=True)
    y, ld = block(x)
    (y.sum() + ld.mean()).backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()


def test_no_graph_is_kept_under_no_grad_in_training_mode():
    for kw in (dict(), dict(mem_eff=False), dict(neumann_grad=False, mem_eff=False)):
        block = _block(contractive_conv(), **kw).train()
        x = torch.randn(2, 2, 2, 2, dtype=DT)
        with torch.no_grad():
            y, ld = block(x)
        assert not y.requires_grad and not ld.requires_grad and ld.shape == (2,)


def test_inference_mode_is_refused_with_a_clear_error():
    block = _block(contractive_mlp(2)).eval()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
        block(torch.randn(2, 2, dtype=DT))


def test_extra_parameters_are_counted_but_unused():
    net = contractive_mlp(2)
    block = _block(net)
    n_net = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for p in block.parameters()) == n_net + 2
    assert {n for n, _ in block.named_parameters()} >= {"geom_p", "lamb"}
    assert block.geom_p.item() == 0.0 and block.lamb.item() == 2.0  # logit(0.5), λ = 2
    assert set(block.state_dict()) == {f"net.{k}" for k in net.state_dict()} | {"geom_p", "lamb"}
    for train in (True, False):
        block.train(train)
        block.zero_grad()
        x = torch.randn(3, 2, dtype=DT, requires_grad=True)
        y, ld = block(x)
        (y.sum() + ld.sum()).backward()
        assert block.geom_p.grad is None and block.lamb.grad is None
