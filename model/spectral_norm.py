"""Spectrally normalised Linear and Conv2d layers (paper §3.2, eq. 2).

Each layer stores a raw weight ``W`` and uses ``W_hat = W / max(1, sigma / coeff)`` (eq. 2), where
``sigma`` estimates the l2 operator norm of the *linear map the layer applies*:

* Linear and 1x1 convolutions: the largest singular value of the ``(out, in)`` weight matrix (a 1x1
  convolution acts on every pixel with that matrix, so its operator norm is the matrix norm).
* k x k convolutions (k > 1): the operator norm of the convolution ``R^{C_in x H x W} ->
  R^{C_out x H' x W'}`` at the layer's input size ``input_hw``, with its zero padding. This can be
  up to k times the norm of the reshaped ``(C_out, C_in k^2)`` matrix, which would under-constrain.

``sigma`` comes from power iteration on unit vectors ``u`` (output side) and ``v`` (input side):
``u <- A v / |A v|``, ``v <- A^T u / |A^T u|`` with ``A`` the layer's map (``conv2d`` and
``conv_transpose2d`` for convolutions). The forward pass never iterates; it uses the stored
buffers and ``sigma = u^T A v``, which is linear, hence differentiable, in ``W``. ``refine`` /
``update_lipschitz`` advance the iteration in place between optimiser steps.

For k x k convolutions ``u^T conv(v, W) = <W, G>`` with ``G = dsigma/dW`` the correlation of ``u``
and ``v``; ``G`` is cached until ``u`` or ``v`` change, so a forward pass pays one element-wise
product for ``sigma`` instead of a convolution (and its backward).

``update_lipschitz`` advances all layers of a model together: layers with the same map shape are
iterated as one batched map (``bmm`` for matrices, a grouped convolution for k x k convolutions),
and in tolerance mode the per-layer convergence flags are read back once per round for the whole
model instead of once per layer and iteration. Each layer still follows its own iteration and its
own stopping rule, exactly as ``refine`` would run it. Under ``torch.no_grad`` (e.g. the fixed-point
inverse) ``W_hat`` is cached until the weight or the vectors change.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SpectralNormLinear",
    "SpectralNormConv2d",
    "update_lipschitz",
    "spectral_norm_layers",
    "true_operator_norm",
]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm().clamp_min(1e-12)


class _SpectralNormBase(nn.Module):
    """Shared power-iteration machinery; subclasses define the map ``A`` and its adjoint."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    u: torch.Tensor
    v: torch.Tensor

    def __init__(self, coeff: float) -> None:
        super().__init__()
        if not coeff > 0:
            raise ValueError(f"coeff must be > 0, got {coeff}")
        self.coeff = float(coeff)

    # ---------------------------------------------------------------- to be provided
    def _apply_op(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # A v
        raise NotImplementedError

    def _apply_adjoint(self, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # A^T u
        raise NotImplementedError

    def _init_vectors(self, u_shape: tuple[int, ...], v_shape: tuple[int, ...], tol: float, max_iters: int) -> None:
        w = self.weight
        self.register_buffer("u", _unit(torch.randn(u_shape, dtype=w.dtype, device=w.device)))
        self.register_buffer("v", _unit(torch.randn(v_shape, dtype=w.dtype, device=w.device)))
        if w.device.type != "meta":
            self.refine(None, tol=tol, max_iters=max_iters)

    # ---------------------------------------------------------------- power iteration
    @torch.no_grad()
    def refine(self, n_iterations: int | None = None, tol: float = 1e-3, max_iters: int = 200) -> int:
        """Power-iterate ``u``, ``v`` in place; returns the number of iterations run.

        ``n_iterations`` given: exactly that many. ``None``: tolerance mode, stop (after at most
        ``max_iters``) once ``|du| / sqrt(numel u) < tol + tol * max(u)`` and likewise for ``v``.
        """
        w = self.weight.detach()
        u, v = self.u.clone(), self.v.clone()
        tolerance_mode = n_iterations is None
        limit = max_iters if tolerance_mode else int(n_iterations)
        done = 0
        for _ in range(limit):
            u_new = _unit(self._apply_op(v, w))
            v_new = _unit(self._apply_adjoint(u_new, w))
            done += 1
            if tolerance_mode:
                err_u = (u_new - u).norm() / math.sqrt(u.numel())
                err_v = (v_new - v).norm() / math.sqrt(v.numel())
                converged = (err_u < tol + tol * u_new.max()) & (err_v < tol + tol * v_new.max())
                u, v = u_new, v_new
                if bool(converged):
                    break
            else:
                u, v = u_new, v_new
        if done:
            self.u.copy_(u)
            self.v.copy_(v)
        return done

    # ---------------------------------------------------------------- batched power iteration
    def _group_key(self) -> tuple:
        """Layers with equal keys apply maps of the same shape and can be iterated as one batch."""
        raise NotImplementedError

    @staticmethod
    def _group_ops(layers: list["_SpectralNormBase"]) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """(A, A^T) of ``len(layers)`` maps at once on stacked vectors (n, *u.shape) / (n, *v.shape)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- sigma and W_hat
    def sigma(self) -> torch.Tensor:
        """``u^T A v`` with the stored vectors: the operator-norm estimate, differentiable in W."""
        return torch.dot(self.u.reshape(-1), self._apply_op(self.v, self.weight).reshape(-1))

    def _compute_normalized_weight(self) -> torch.Tensor:
        factor = torch.clamp(self.sigma() / self.coeff, min=1.0)
        return self.weight / factor

    def normalized_weight(self) -> torch.Tensor:
        """Eq. 2: ``W / max(1, sigma / coeff)``; cached while autograd is off (no graph to keep)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._compute_normalized_weight()
        w, u, v = self.weight, self.u, self.v
        try:
            key = (w.data_ptr(), w._version, u.data_ptr(), u._version, v.data_ptr(), v._version, w.dtype, w.device)
        except RuntimeError:  # tensors without storage / version counter: no caching
            return self._compute_normalized_weight()
        cached = self.__dict__.get("_w_hat")
        if cached is None or cached[0] != key:
            cached = (key, self._compute_normalized_weight())
            self.__dict__["_w_hat"] = cached
        return cached[1]


class SpectralNormLinear(_SpectralNormBase):
    """``y = W_hat x + b`` with ``W_hat`` of eq. 2 and ``sigma`` the weight's largest singular value.

    Weight and bias are initialised as ``nn.Linear`` does. ``u`` (out,) and ``v`` (in,) are power-
    iterated at construction in tolerance mode (``tol``, at most ``max_iters`` iterations).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coeff: float,
        bias: bool = True,
        *,
        tol: float = 1e-3,
        max_iters: int = 200,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(coeff)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        self.reset_parameters()
        self._init_vectors((self.out_features,), (self.in_features,), tol, max_iters)

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Linear`` init (kaiming-uniform a=sqrt(5), uniform bias)."""
        nn.Linear.reset_parameters(self)  # type: ignore[arg-type]

    def _apply_op(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.mv(weight, v)

    def _apply_adjoint(self, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.mv(weight.t(), u)

    def _group_key(self) -> tuple:
        return ("matrix", self.out_features, self.in_features, self.weight.dtype, self.weight.device)

    @staticmethod
    def _group_ops(layers):  # type: ignore[no-untyped-def]
        return _matrix_group_ops([layer.weight.detach() for layer in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, coeff={self.coeff}, bias={self.bias is not None}"


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


class SpectralNormConv2d(_SpectralNormBase):
    """Stride-1 ``conv2d(x, W_hat, b, padding)`` with ``W_hat`` of eq. 2.

    1x1 kernels: ``sigma`` is the largest singular value of the ``(out, in)`` matrix (``u`` (out,),
    ``v`` (in,)). Larger kernels: ``sigma`` is the operator norm of the convolution on
    ``(C_in, *input_hw)`` maps (``v`` of shape (1, C_in, H, W), ``u`` (1, C_out, H', W')); forward
    inputs must then have spatial size ``input_hw``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        padding: int | tuple[int, int],
        input_hw: tuple[int, int],
        coeff: float,
        bias: bool = True,
        *,
        tol: float = 1e-3,
        max_iters: int = 200,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(coeff)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size)
        self.padding = _pair(padding)
        self.input_hw = _pair(input_hw)  # type: ignore[arg-type]
        kh, kw = self.kernel_size
        ph, pw = self.padding
        h, w = self.input_hw
        self.output_hw = (h + 2 * ph - kh + 1, w + 2 * pw - kw + 1)
        if min(self.output_hw) < 1:
            raise ValueError(f"kernel {self.kernel_size} with padding {self.padding} does not fit input {self.input_hw}")
        self.is_pointwise = self.kernel_size == (1, 1)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, kh, kw, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if bias else None
        self.reset_parameters()
        self._gram: torch.Tensor | None = None
        self._gram_key: tuple | None = None
        if self.is_pointwise:
            u_shape: tuple[int, ...] = (self.out_channels,)
            v_shape: tuple[int, ...] = (self.in_channels,)
        else:
            u_shape = (1, self.out_channels, *self.output_hw)
            v_shape = (1, self.in_channels, h, w)
        self._init_vectors(u_shape, v_shape, tol, max_iters)

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Conv2d`` init (kaiming-uniform a=sqrt(5), uniform bias)."""
        nn.Conv2d.reset_parameters(self)  # type: ignore[arg-type]

    def _apply_op(self, v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.is_pointwise:
            return torch.mv(weight.reshape(self.out_channels, self.in_channels), v)
        return F.conv2d(v, weight, padding=self.padding)

    def _apply_adjoint(self, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.is_pointwise:
            return torch.mv(weight.reshape(self.out_channels, self.in_channels).t(), u)
        return F.conv_transpose2d(u, weight, padding=self.padding)

    def _group_key(self) -> tuple:
        w = self.weight
        if self.is_pointwise:
            return ("matrix", self.out_channels, self.in_channels, w.dtype, w.device)
        return ("conv", self.out_channels, self.in_channels, self.kernel_size, self.padding, self.input_hw,
                w.dtype, w.device)

    @staticmethod
    def _group_ops(layers):  # type: ignore[no-untyped-def]
        first = layers[0]
        if first.is_pointwise:
            return _matrix_group_ops([layer.weight.detach() for layer in layers])
        n = len(layers)
        weight = torch.cat([layer.weight.detach() for layer in layers])  # (n*out, in, kh, kw): groups = n
        pad = first.padding

        def op(v: Tensor) -> Tensor:  # v: (n, 1, in, H, W) -> (n, 1, out, H', W')
            out = F.conv2d(v.reshape(1, -1, *v.shape[-2:]), weight, padding=pad, groups=n)
            return out.reshape(n, 1, first.out_channels, *out.shape[-2:])

        def adjoint(u: Tensor) -> Tensor:
            out = F.conv_transpose2d(u.reshape(1, -1, *u.shape[-2:]), weight, padding=pad, groups=n)
            return out.reshape(n, 1, first.in_channels, *out.shape[-2:])

        return op, adjoint

    # ---------------------------------------------------------------- cached dsigma/dW
    def _gram_cache_key(self) -> tuple | None:
        if torch.compiler.is_compiling():
            return None
        u, v = self.u, self.v
        try:
            return (u.data_ptr(), u._version, v.data_ptr(), v._version, u.device, u.dtype)
        except RuntimeError:  # tensors without storage / version counter: no caching
            return None

    def _correlation(self) -> torch.Tensor:
        """``G = dsigma/dW``: ``G[o, i, a, b] = sum_{y, x} u[o, y, x] * v_pad[i, y + a, x + b]``."""
        with torch.no_grad():
            return torch.nn.grad.conv2d_weight(self.v, self.weight.shape, self.u, padding=self.padding)

    def sigma(self) -> torch.Tensor:
        if self.is_pointwise:
            return super().sigma()
        key = self._gram_cache_key()
        if key is None:
            return super().sigma()
        if self._gram is None or self._gram_key != key:
            self._gram = self._correlation()
            self._gram_key = key
        return (self.weight * self._gram).sum()

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._gram, self._gram_key = None, None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_pointwise and tuple(x.shape[-2:]) != self.input_hw:
            raise ValueError(
                f"SpectralNormConv2d normalises the operator at input size {self.input_hw}, got {tuple(x.shape[-2:])}"
            )
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, padding={self.padding}, "
            f"input_hw={self.input_hw}, coeff={self.coeff}, bias={self.bias is not None}"
        )


SpectralNormLayer = (SpectralNormLinear, SpectralNormConv2d)


def spectral_norm_layers(module: nn.Module) -> Iterator[_SpectralNormBase]:
    """Every spectrally normalised layer inside ``module`` (including itself)."""
    for m in module.modules():
        if isinstance(m, _SpectralNormBase):
            yield m


def _matrix_group_ops(weights: list[Tensor]) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    w = torch.stack([m.reshape(m.shape[0], -1) for m in weights])  # (n, out, in); 1x1 kernels as matrices
    wt = w.transpose(1, 2)
    return (lambda v: torch.bmm(w, v.unsqueeze(2)).squeeze(2)), (lambda u: torch.bmm(wt, u.unsqueeze(2)).squeeze(2))


def _unit_rows(x: Tensor) -> Tensor:
    """Each x[i] / |x[i]| (the batched ``_unit``)."""
    norms = x.flatten(1).norm(dim=1).clamp_min(1e-12)
    return x / norms.reshape(-1, *([1] * (x.dim() - 1)))


class _Group:
    """Layers whose maps have one shape, power-iterated together (see ``update_lipschitz``)."""

    def __init__(self, layers: list[_SpectralNormBase]) -> None:
        self.layers = layers
        self.op, self.adjoint = type(layers[0])._group_ops(layers)
        self.u = torch.stack([layer.u for layer in layers])
        self.v = torch.stack([layer.v for layer in layers])
        self.u_dim = math.sqrt(layers[0].u.numel())
        self.v_dim = math.sqrt(layers[0].v.numel())

    def step(self, tol: float | None) -> Tensor | None:
        """One iteration for every layer; in tolerance mode the (n,) flags of ``refine``'s test."""
        u_new = _unit_rows(self.op(self.v))
        v_new = _unit_rows(self.adjoint(u_new))
        flags = None
        if tol is not None:
            err_u = (u_new - self.u).flatten(1).norm(dim=1) / self.u_dim
            err_v = (v_new - self.v).flatten(1).norm(dim=1) / self.v_dim
            flags = (err_u < tol + tol * u_new.flatten(1).amax(1)) & (err_v < tol + tol * v_new.flatten(1).amax(1))
        self.u, self.v = u_new, v_new
        return flags

    def write_back(self, keep: list[int] | None = None) -> None:
        """Copy the iterates into the layers' buffers (all, or all but the indices in ``keep``)."""
        keep_set = set(keep or ())
        for i, layer in enumerate(self.layers):
            if i not in keep_set:
                layer.u.copy_(self.u[i])
                layer.v.copy_(self.v[i])

    def retain(self, keep: list[int]) -> None:
        """Continue with the layers at ``keep`` only."""
        self.layers = [self.layers[i] for i in keep]
        index = torch.tensor(keep, device=self.u.device)
        self.u, self.v = self.u.index_select(0, index), self.v.index_select(0, index)
        self.op, self.adjoint = type(self.layers[0])._group_ops(self.layers)


@torch.no_grad()
def update_lipschitz(module: nn.Module, n_iterations: int | None = None, tol: float = 1e-3, max_iters: int = 200) -> None:
    """``refine`` every spectrally normalised layer in ``module`` (after each optimiser step).

    Every layer ends exactly where its own ``refine(n_iterations, tol, max_iters)`` would: layers of
    the same shape are iterated as one batch, and in tolerance mode all layers advance in rounds,
    each round reading every layer's convergence flag back at once; converged layers leave.
    """
    groups: dict[tuple, list[_SpectralNormBase]] = {}
    for layer in spectral_norm_layers(module):
        layer.__dict__.pop("_w_hat", None)  # the no-grad W_hat cache: stale from here on, free it
        groups.setdefault(layer._group_key(), []).append(layer)
    if n_iterations is not None:
        for layers in groups.values():
            if len(layers) == 1:
                layers[0].refine(n_iterations)
                continue
            group = _Group(layers)
            for _ in range(int(n_iterations)):
                group.step(None)
            if n_iterations > 0:
                group.write_back()
        return
    active = [_Group(layers) for layers in groups.values()]
    for _ in range(max_iters):
        if not active:
            break
        flags = torch.cat([group.step(tol) for group in active]).tolist()  # one host read per round
        still: list[_Group] = []
        offset = 0
        for group in active:
            n = len(group.layers)
            keep = [i for i in range(n) if not flags[offset + i]]
            offset += n
            group.write_back(keep)
            if keep:
                if len(keep) < n:  # some layers converged: continue with the others only
                    group.retain(keep)
                still.append(group)
        active = still
    for group in active:  # out of iterations: keep the last iterates, as refine does
        group.write_back()


@torch.no_grad()
def true_operator_norm(
    layer: SpectralNormLinear | SpectralNormConv2d,
    normalized: bool = True,
    dense_limit: int = 1024,
    power_iters: int = 20000,
    rel_tol: float = 1e-13,
) -> float:
    """The l2 operator norm of the layer's linear map, computed in float64 for testing.

    Matrices (Linear, 1x1 conv) and convolutions with at most ``dense_limit`` input values: exact,
    from the singular values of the dense operator (the convolution applied to the standard basis).
    Larger convolutions: power iteration on ``A^T A`` from a fixed random start until the estimate
    changes by less than ``rel_tol`` (relative) or after ``power_iters`` steps; a lower bound that
    converges to the norm. ``normalized`` selects ``W_hat`` of eq. 2 (current buffers), else raw ``W``.
    """
    w = (layer.normalized_weight() if normalized else layer.weight).detach().double()
    if isinstance(layer, SpectralNormLinear) or (isinstance(layer, SpectralNormConv2d) and layer.is_pointwise):
        return float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2))
    c, (h, wd) = layer.in_channels, layer.input_hw
    n = c * h * wd
    if n <= dense_limit:
        basis = torch.eye(n, dtype=torch.float64, device=w.device).reshape(n, c, h, wd)
        dense = F.conv2d(basis, w, padding=layer.padding).reshape(n, -1)
        return float(torch.linalg.matrix_norm(dense, ord=2))
    gen = torch.Generator(device=w.device).manual_seed(0)
    v = _unit(torch.randn((1, c, h, wd), dtype=torch.float64, device=w.device, generator=gen))
    norm = 0.0
    for _ in range(power_iters):
        v = F.conv_transpose2d(F.conv2d(v, w, padding=layer.padding), w, padding=layer.padding)
        new = float(v.norm().sqrt())  # sqrt |A^T A v| -> sigma for unit v
        v = _unit(v)
        if abs(new - norm) <= rel_tol * new:
            return new
        norm = new
    return norm
