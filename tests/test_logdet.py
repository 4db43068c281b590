"""The log-det estimators against exact answers: slogdet of the full Jacobian, exact roulette
expectations, and Monte-Carlo means compared within a few standard errors (fixed seeds, float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.config import ModelConfig, toy_config
from model.logdet import (
    EstimatorSettings,
    draw_weights,
    exact_logdet,
    memory_efficient_logdet,
    neumann_logdet,
    power_series_logdet,
    roulette_weights,
    sample_roulette,
    tail_probability,
)

torch.set_num_threads(1)
DT = torch.float64


def _scale(layer: nn.Module, in_shape: tuple[int, ...], target: float) -> None:
    """Rescale the weight of a linear/conv layer so its operator norm (bias off) is ``target``."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=DT).reshape(n, *in_shape)
    with torch.no_grad():
        out = layer(basis) - layer(torch.zeros_like(basis))
        sigma = torch.linalg.matrix_norm(out.reshape(n, -1), ord=2)
        layer.weight.mul_(target / sigma)


def contractive_mlp(d: int, lip: float = 0.5, hidden: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d)).to(DT)
    _scale(net[0], (d,), math.sqrt(lip))
    _scale(net[2], (hidden,), math.sqrt(lip))
    return net


def contractive_conv(lip: float = 0.5, seed: int = 0) -> nn.Module:
    """g on (2, 2, 2) images: conv3x3 → tanh → conv3x3 with Lip(g) ≤ lip."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, padding=1)).to(DT)
    _scale(net[0], (2, 2, 2), math.sqrt(lip))
    _scale(net[2], (4, 2, 2), math.sqrt(lip))
    return net


def slogdet_reference(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log|det(I + J)| of each sample via torch.autograd.functional.jacobian."""
    out = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], xb)
        d = xb.numel()
        out.append(torch.linalg.slogdet(torch.eye(d, dtype=DT) + jac.reshape(d, d))[1])
    return torch.stack(out)


CASES = [
    ("vector2", lambda: contractive_mlp(2), (2,)),
    ("image222", lambda: contractive_conv(), (2, 2, 2)),
]


# ------------------------------------------------------------------------ settings and roulette
def test_settings_defaults_and_from_config():
    s = EstimatorSettings()
    assert (s.n_exact_terms, s.eval_exact_terms, s.n_dist, s.poisson_lambda, s.geometric_p) == (
        2, 20, "poisson", 2.0, 0.5)
    assert s.neumann_grad and s.mem_eff and not s.brute_force
    assert EstimatorSettings.from_config(ModelConfig()) == s
    toy = EstimatorSettings.from_config(toy_config())
    assert toy.n_dist == "geometric" and not toy.neumann_grad and not toy.mem_eff
    with pytest.raises(ValueError):
        EstimatorSettings(n_dist="uniform")


@pytest.mark.parametrize("m", [0, 1, 2, 3, 5, 8, 12])
def test_tail_probabilities(m):
    lam = 2.0
    pois = EstimatorSettings(n_dist="poisson", poisson_lambda=lam)
    head = sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(m))
    assert tail_probability(pois, m) == pytest.approx(1 - head, rel=1e-9, abs=1e-15)
    geo = EstimatorSettings(n_dist="geometric", geometric_p=0.3)
    assert tail_probability(geo, m) == pytest.approx(0.7 ** max(m - 1, 0), rel=1e-12)


@pytest.mark.parametrize("n_dist", ["poisson", "geometric"])
def test_roulette_weights_have_expectation_one(n_dist):
    """E_N[c_k] = Σ_N P(N) 1[N ≥ k − n_exact]/P(N ≥ k − n_exact) = 1 for every k (exact sum)."""
    s = EstimatorSettings(n_dist=n_dist)
    n_exact, cut = 2, 80
    if n_dist == "poisson":
        pmf = [math.exp(-2.0) * 2.0**n / math.factorial(n) for n in range(cut)]
    else:
        pmf = [0.0] + [0.5**n for n in range(1, cut)]
    for k in range(1, 12):
        expect = 0.0
        for n, pn in enumerate(pmf):
            w = roulette_weights(s, n_exact, n)
            expect += pn * (w[k - 1] if k <= len(w) else 0.0)
        assert expect == pytest.approx(1.0, abs=1e-12)


def test_roulette_draws_follow_torch_seed_and_law():
    pois, geo = EstimatorSettings(n_dist="poisson"), EstimatorSettings(n_dist="geometric")
    torch.manual_seed(3)
    a = [sample_roulette(pois) for _ in range(20)]
    torch.manual_seed(3)
    b = [sample_roulette(pois) for _ in range(20)]
    assert a == b
    gen = torch.Generator().manual_seed(7)
    draws = torch.tensor([sample_roulette(pois, gen) for _ in range(4000)], dtype=DT)
    assert abs(draws.mean().item() - 2.0) < 3 * math.sqrt(2.0 / 4000)
    assert draws.min() == 0
    draws = torch.tensor([sample_roulette(geo, gen) for _ in range(4000)], dtype=DT)
    assert draws.min() == 1
    assert abs(draws.mean().item() - 2.0) < 3 * math.sqrt(2.0 / 4000)  # mean 1/p, var (1-p)/p²
    w = draw_weights(pois, 2, torch.Generator().manual_seed(0))
    assert len(w) >= 2 and w[:2] == [1.0, 1.0]


# ------------------------------------------------------------------------ power series
@pytest.mark.parametrize("name,make,shape", CASES)
def test_exact_logdet_matches_slogdet(name, make, shape):
    net = make()
    x = torch.randn(5, *shape, dtype=DT, requires_grad=True)
    got = exact_logdet(net(x), x)
    assert torch.allclose(got, slogdet_reference(net, x.detach()), atol=1e-12)


@pytest.mark.parametrize("name,make,shape", CASES)
def test_power_series_with_basis_probes_is_exact(name, make, shape):
    """Σ_i e_iᵀ J^k e_i = tr(J^k), so 60 terms over all basis probes give log det(I + J) (eq. 3)."""
    net = make()
    x = torch.randn(3, *shape, dtype=DT, requires_grad=True)
    g = net(x)
    d = math.prod(shape)
    total = torch.zeros(3, dtype=DT)
    for i in range(d):
        probe = torch.zeros(3, d, dtype=DT)
        probe[:, i] = 1
        total += power_series_logdet(g, x, probe.reshape_as(x), [1.0] * 60, create_graph=False)
    ref = slogdet_reference(net, x.detach())
    assert torch.allclose(total, ref, atol=1e-6)
    assert torch.allclose(total, ref, atol=1e-12)  # 0.5^61 truncation: far below 1e-6


@pytest.mark.parametrize("name,make,shape", CASES)
def test_hutchinson_mean_within_three_standard_errors(name, make, shape):
    net = make()
    torch.manual_seed(1)
    x0 = torch.randn(1, *shape, dtype=DT)
    m = 4000
    x = x0.expand(m, *shape).clone().requires_grad_(True)
    est = power_series_logdet(net(x), x, torch.randn_like(x), [1.0] * 60, create_graph=False)
    ref = slogdet_reference(net, x0)[0]
    se = est.std() / math.sqrt(m)
    assert abs(est.mean() - ref) < 3 * se


@pytest.mark.parametrize("n_dist", ["poisson", "geometric"])
@pytest.mark.parametrize("name,make,shape", CASES)
def test_russian_roulette_is_unbiased(n_dist, name, make, shape):
    net = make()
    s = EstimatorSettings(n_dist=n_dist)
    torch.manual_seed(2)
    x0 = torch.randn(1, *shape, dtype=DT)
    ref = slogdet_reference(net, x0)[0]
    x = x0.expand(32, *shape).clone().requires_grad_(True)
    g = net(x)
    means, n_terms = [], []
    for _ in range(400):
        w = draw_weights(s, 2)
        n_terms.append(len(w))
        means.append(power_series_logdet(g, x, torch.randn_like(x), w, create_graph=False).mean())
    means = torch.stack(means)
    se = means.std() / math.sqrt(len(means))
    assert abs(means.mean() - ref) < 3 * se
    assert min(n_terms) >= (2 if n_dist == "poisson" else 3) and max(n_terms) > 4


# ------------------------------------------------------------------------ gradients
def _flat_grads(out, inputs, create_graph=False):
    """∂out/∂inputs flattened into one vector (zeros for inputs out does not depend on)."""
    grads = torch.autograd.grad(out, inputs, allow_unused=True, create_graph=create_graph)
    return [torch.zeros_like(i) if gr is None else gr for i, gr in zip(inputs, grads)]


def _exact_grads(net, x0):
    x = x0.clone().requires_grad_(True)
    params = list(net.parameters())
    ld = exact_logdet(net(x), x, create_graph=True).sum()
    grads = _flat_grads(ld, [x, *params])
    return torch.cat([gr.reshape(-1) for gr in grads])


def test_neumann_gradient_is_unbiased():
    """E[∂(vᵀJε)] = ∂ log det(I + J) for x and θ; compared per component within 4.5 standard errors
    (about 50 components) and as a whole vector."""
    net = contractive_mlp(2, lip=0.6, seed=4)
    s = EstimatorSettings(n_dist="poisson")
    torch.manual_seed(5)
    x0 = torch.randn(1, 2, dtype=DT)
    ref = _exact_grads(net, x0)
    params = list(net.parameters())
    reps, m = 300, 16
    samples = []
    for _ in range(reps):
        x = x0.expand(m, 2).clone().requires_grad_(True)
        surrogate = neumann_logdet(net(x), x, torch.randn_like(x), draw_weights(s, 2), training=True)
        gx, *gp = _flat_grads(surrogate.sum() / m, [x, *params])
        samples.append(torch.cat([gx.sum(0).reshape(-1)] + [gr.reshape(-1) for gr in gp]))
    samples = torch.stack(samples)
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(reps)
    fixed = se == 0  # the last bias does not enter J: exactly zero gradient in every estimate
    assert torch.equal(mean[fixed], ref[fixed]) and fixed.sum() < 5
    z = (mean - ref)[~fixed] / se[~fixed]
    assert z.abs().max() < 4.5
    assert (mean - ref).norm() < 0.05 * ref.norm() + 3 * se.norm()


def test_neumann_value_is_the_surrogate():
    """With exact weights the surrogate's value is vᵀJε for v = εᵀ(I + J)⁻¹ (Neumann sum)."""
    net = contractive_mlp(2)
    x = torch.randn(4, 2, dtype=DT, requires_grad=True)
    eps = torch.randn_like(x)
    val = neumann_logdet(net(x), x, eps, [1.0] * 80, training=False)
    for b in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], x[b].detach())
        v = torch.linalg.solve((torch.eye(2, dtype=DT) + jac).T, eps[b])
        assert val[b].item() == pytest.approx((v @ jac @ eps[b]).item(), abs=1e-12)


@pytest.mark.parametrize("neumann", [True, False])
@pytest.mark.parametrize("name,make,shape", CASES)
def test_memory_efficient_matches_plain_backprop(neumann, name, make, shape):
    """Same probe and weights: identical input and parameter gradients for a batch-mean loss; the
    input gradient stays exact per sample for any weighting of the log-dets."""
    net = make()
    params = list(net.parameters())
    torch.manual_seed(6)
    x0 = torch.randn(5, *shape, dtype=DT)
    eps = torch.randn_like(x0)
    w_y = torch.randn_like(x0)
    weights = [1.0, 1.0, 1.6, 3.2]

    def grads(mem_eff: bool, per_sample: torch.Tensor):
        x = x0.clone().requires_grad_(True)
        if mem_eff:
            g, ld = memory_efficient_logdet(net, x, eps, weights, neumann=neumann)
        else:
            g = net(x)
            ld = (neumann_logdet(g, x, eps, weights, training=True) if neumann
                  else power_series_logdet(g, x, eps, weights, create_graph=True))
        loss = ((x + g) * w_y).sum() + (ld * per_sample).sum()
        return ld.detach(), torch.autograd.grad(loss, [x, *params])

    uniform = torch.full((5,), 0.2, dtype=DT)
    ld_a, ga = grads(True, uniform)
    ld_b, gb = grads(False, uniform)
    assert torch.allclose(ld_a, ld_b, atol=1e-13)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-12)
    varied = torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5], dtype=DT)
    ga = grads(True, varied)[1]
    gb = grads(False, varied)[1]
    assert torch.allclose(ga[0], gb[0], atol=1e-12)
