"""Checks that the fast paths compute the same maths as the direct formulas (float64); each returns
its largest deviations by name (tests/test_fast_paths.py holds them to :data:`BOUND`).

* activations (paper eq. 10, 11, 14) against the formulas as written, values and the first and second
  derivatives the log-det estimator takes (double backward);
* a dense layer (eq. 5) with the concatenation weight folded into the activation against
  ``cat([η̂₁ x, η̂₂ φ(Wx)])``, values and vector-Jacobian products with their parameter gradients;
* the power series (eq. 3) summed before the probe product against the term-by-term sum;
* ``update_lipschitz`` (batched, one host read per round) against ``refine`` layer by layer;
* the flow's output z and its inverse in channels-last against the contiguous layout.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from model.activations import make_activation
from model.config import model_config, toy_config
from model.dense import DenseConvNet, DenseLayer
from model.flow import build_model
from model.logdet import power_series_logdet
from model.spectral_norm import spectral_norm_layers, update_lipschitz


def _reference_activation(name: str, act: torch.nn.Module, x: Tensor) -> Tensor:
    beta = act.beta
    ls = lambda t: t * torch.sigmoid(beta * t) / 1.1  # noqa: E731  (eq. 10)
    if name == "lipswish":
        return ls(x)
    if name == "clipswish":
        return torch.cat([ls(x), ls(-x)], 1) / 1.004
    alpha = act.alpha
    return alpha * x + (1 - alpha) * ls(x)


def _second_order(f, x: Tensor, params: list[Tensor], w: Tensor, p: Tensor) -> list[Tensor]:
    """Gradients of <J_f(x)ᵀ w, p> with respect to x and params (what the estimators differentiate)."""
    xi = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(f(xi), xi, w, create_graph=True)
    return list(torch.autograd.grad((vjp * p).sum(), [xi, *params], allow_unused=True, materialize_grads=True))


def _max_diff(a: list[Tensor], b: list[Tensor]) -> float:
    return max(float((u - v).detach().abs().max()) for u, v in zip(a, b))


def check_activations() -> dict[str, float]:
    out = {}
    torch.manual_seed(0)
    for name in ("lipswish", "clipswish", "leakylswish"):
        act = make_activation(name).double()
        with torch.no_grad():
            for q in act.parameters():
                q.add_(0.3 * torch.randn_like(q))
        x = 3 * torch.randn(6, 5, 4, 4, dtype=torch.float64)
        fast, ref = act(x), _reference_activation(name, act, x)
        w, p = torch.randn_like(fast), torch.randn_like(x)
        params = list(act.parameters())
        g_fast = _second_order(act, x, params, w, p)
        g_ref = _second_order(lambda t: _reference_activation(name, act, t), x, params, w, p)
        out[f"activation/{name}"] = max(float((fast - ref).detach().abs().max()), _max_diff(g_fast, g_ref))
    return out


def check_dense_layer() -> dict[str, float]:
    out = {}
    torch.manual_seed(1)
    for activation in ("lipswish", "clipswish", "leakylswish"):
        net = DenseConvNet(3, 2, 8, activation, (6, 6), eta_init=(0.3, 1.7)).double()
        layer: DenseLayer = net[0]
        x = torch.randn(4, 3, 6, 6, dtype=torch.float64)

        def plain(t: Tensor) -> Tensor:
            eta = layer.eta_hat()
            return torch.cat([t * eta[0], layer.net(t) * eta[1]], dim=1)

        fast, ref = layer(x), plain(x)
        w, p = torch.randn_like(fast), torch.randn_like(x)
        params = list(layer.parameters())
        g_fast = _second_order(layer, x, params, w, p)
        g_ref = _second_order(plain, x, params, w, p)
        out[f"dense_layer/{activation}"] = max(float((fast - ref).detach().abs().max()), _max_diff(g_fast, g_ref))
    return out


def check_power_series() -> dict[str, float]:
    torch.manual_seed(2)
    net = DenseConvNet(3, 2, 8, "clipswish", (5, 5)).double()
    x = torch.randn(3, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    eps = torch.randn_like(x)
    weights = [1.0, 1.0, 1.35, 2.7, 8.1]
    g = net(x)
    fast = power_series_logdet(g, x, eps, weights, create_graph=True)
    v, ref = eps, torch.zeros(3, dtype=torch.float64)
    for k, c in enumerate(weights, start=1):
        (v,) = torch.autograd.grad(g, x, v, create_graph=True, retain_graph=True)
        ref = ref + (-1) ** (k + 1) / k * c * (v * eps).flatten(1).sum(1)
    params = list(net.parameters())
    g_fast = torch.autograd.grad(fast.sum(), [x, *params], retain_graph=True, allow_unused=True, materialize_grads=True)
    g_ref = torch.autograd.grad(ref.sum(), [x, *params], allow_unused=True, materialize_grads=True)
    return {"power_series": max(float((fast - ref).detach().abs().max()), _max_diff(list(g_fast), list(g_ref)))}


def check_update_lipschitz() -> dict[str, float]:
    out = {}
    torch.manual_seed(3)
    cases = [("toy_fixed5", toy_config(), 5), ("toy_tolerance", toy_config(), None),
             ("image_tolerance", model_config(blocks_per_scale=(2, 2), depth=2, growth=8, fc_blocks=2), None)]
    for label, cfg, iters in cases:
        model = build_model(cfg).double()
        with torch.no_grad():
            for q in model.parameters():
                q.add_(0.05 * torch.randn_like(q))
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        for layer in spectral_norm_layers(a):
            layer.refine(iters, tol=cfg.sn_tol, max_iters=cfg.sn_max_iters)
        update_lipschitz(b, iters, tol=cfg.sn_tol, max_iters=cfg.sn_max_iters)
        diffs = [float((la.u - lb.u).abs().max()) for la, lb in zip(spectral_norm_layers(a), spectral_norm_layers(b))]
        diffs += [float((la.v - lb.v).abs().max()) for la, lb in zip(spectral_norm_layers(a), spectral_norm_layers(b))]
        out[f"update_lipschitz/{label}"] = max(diffs)
    return out


def check_memory_format() -> dict[str, float]:
    torch.manual_seed(4)
    model = build_model(model_config(blocks_per_scale=(1, 1), depth=2, growth=8, fc_blocks=1)).double()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    model.initialize(x)
    model.eval()
    zs, xs = [], []
    for fmt in ("contiguous", "channels_last"):
        model.memory_format = fmt
        with torch.no_grad():
            z, _ = model(x)
            zs.append(z)
            xs.append(model.inverse(z))
    return {"memory_format/z": float((zs[0] - zs[1]).abs().max()), "memory_format/inverse": float((xs[0] - xs[1]).abs().max())}


BOUND = 1e-9  # float64: a few ulps of the values involved
