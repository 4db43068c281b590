"""The whole flow: a chain of invertible steps built from a :class:`ModelConfig`.

Images (paper Table 7, appendix B): logit transform → ActNorm → per scale, n_s invertible blocks
each followed by ActNorm, with a squeeze between scales → flatten → ``fc_blocks`` fully connected
blocks each followed by ActNorm. Toy vectors (paper §4.1): a chain of invertible blocks.

The change of variables gives log p(x) = log N(f(x); 0, I) + log|det J_f(x)| (paper eq. 1), where
each invertible block contributes log det(I + J_g) estimated by the power series (eq. 3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .compiled_eval import compiled_evaluation
from .config import ModelConfig
from .dense import DenseLayer, dense_layers
from .iresblock import InvertibleResBlock
from .layers import ActNorm, Flatten, LogitTransform, Squeeze
from .logdet import EstimatorSettings
from .spectral_norm import update_lipschitz

LOG_2PI = math.log(2 * math.pi)
INVERSE_TOL = 1e-10


def log_prob_from_output(z: Tensor, logdet: Tensor) -> Tensor:
    """log p(x) = log N(z; 0, I) + log|det J_f(x)| per sample (eq. 1), from the flow's ``(z, logdet)``."""
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * LOG_2PI) + logdet


def bits_per_dim_from_log_prob(log_p: Tensor, n_dims: int, n_levels: int) -> Tensor:
    """Bits per dimension of images dequantised as x = (p + u)/n: −(log p(x) − D·log n)/(D·ln 2)
    (the density of the discrete pixels p, Residual Flows' convention)."""
    return -(log_p - n_dims * math.log(n_levels)) / (n_dims * math.log(2))


MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


class Flow(nn.Module):
    """An invertible map f with tractable log-determinant and a standard normal base.

    ``forward(x) -> (z, logdet)``: z flattened to (B, D), logdet (B,) = log|det J_f(x)|.

    ``memory_format`` is how image tensors are laid out inside the flow (the numbers are the same in
    any layout): ``"auto"`` (default) uses channels-last on the CPU, where oneDNN convolutions run
    faster on it, except when training back-propagates through the whole power series
    (``neumann_grad=False``: its many slice gradients come back in the contiguous layout and the
    mixed layouts cost more than the convolutions gain), and the contiguous layout on other devices;
    ``"channels_last"`` / ``"contiguous"`` force one.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.memory_format = "auto"
        settings = EstimatorSettings.from_config(config)
        steps: list[nn.Module] = []
        cfg = config
        family = cfg.family_spec  # builds each block's g (model.families)
        if cfg.is_toy:
            (d,) = cfg.input_shape
            for _ in range(cfg.blocks_per_scale[0]):
                steps.append(InvertibleResBlock(family.vector_net(cfg, d, fc_part=False), settings))
                if cfg.actnorm:
                    steps.append(ActNorm(d))
        else:
            steps.append(LogitTransform(cfg.logit_alpha))
            if cfg.actnorm:
                steps.append(ActNorm(cfg.input_shape[0]))
            shapes = cfg.scale_shapes()
            for s, (c, h, w) in enumerate(shapes):
                for b in range(cfg.blocks_per_scale[s]):
                    net = family.conv_net(cfg, c, (h, w), first=(s == 0 and b == 0))
                    steps.append(InvertibleResBlock(net, settings))
                    if cfg.actnorm:
                        steps.append(ActNorm(c))
                if s < len(shapes) - 1:
                    steps.append(Squeeze())
            steps.append(Flatten(shapes[-1]))
            for _ in range(cfg.fc_blocks):
                steps.append(InvertibleResBlock(family.vector_net(cfg, cfg.n_dims, fc_part=True), settings))
                if cfg.actnorm:
                    steps.append(ActNorm(cfg.n_dims))
        self.steps = nn.ModuleList(steps)

    # ------------------------------------------------------------------ transforms
    def _layout(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return x
        fmt = self.memory_format
        if fmt not in MEMORY_FORMATS:
            raise ValueError(f"memory_format {fmt!r} is not one of {', '.join(MEMORY_FORMATS)}")
        auto_cl = x.device.type == "cpu" and (self.config.neumann_grad or not self.training)
        if fmt == "channels_last" or (fmt == "auto" and auto_cl):
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        x = self._layout(x)
        for step in self.steps:
            x, ld = step(x)
            logdet = logdet + ld
        return x.flatten(1), logdet

    def inverse(self, z: Tensor, atol: float = INVERSE_TOL, rtol: float = INVERSE_TOL,
                compiled: bool = False) -> Tensor:
        """x = f⁻¹(z); invertible blocks by fixed-point iteration (paper §3.2).

        Each block iterates until every step (x − x_prev)² < atol + rtol·|y|. The authors stop at
        1e-5, a step of ~3e-3, which leaves errors of ~1e-4 in the data; 1e-10 (a step of ~1e-5)
        costs a few more iterations per block (convergence is linear at rate Lip(g)).
        ``compiled=True`` (in evaluation mode) runs every g compiled
        (:func:`model.compiled_eval.compiled_evaluation`).
        """
        if compiled:
            with compiled_evaluation(self):
                return self.inverse(z, atol, rtol)
        x = z
        for step in reversed(self.steps):
            if isinstance(step, InvertibleResBlock):
                x = step.inverse(x, atol=atol, rtol=rtol)
            else:
                x = step.inverse(x)
                if isinstance(step, Flatten):
                    x = self._layout(x)
        return x.contiguous()

    # ------------------------------------------------------------------ densities
    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats per sample (eq. 1): log N(z; 0, I) + log|det J_f(x)|."""
        return log_prob_from_output(*self(x))

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """bpd of dequantised images x = (p + u)/n_levels (see :func:`bits_per_dim_from_log_prob`)."""
        return bits_per_dim_from_log_prob(self.log_prob(x), self.config.n_dims, self.config.n_levels)

    def score_from_output(self, z: Tensor, logdet: Tensor) -> Tensor:
        """The per-sample score the project trains on and reports, from ``(z, logdet) = self(x)``:
        −log p(x) in nats for toy data (paper Table 1), bits per dimension for images (Table 3)."""
        log_p = log_prob_from_output(z, logdet)
        if self.config.is_toy:
            return -log_p
        return bits_per_dim_from_log_prob(log_p, self.config.n_dims, self.config.n_levels)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
               compiled: bool = False) -> Tensor:
        """Draw z ~ N(0, T²I) and invert the flow (``compiled``: see :meth:`inverse`)."""
        p = next(self.parameters())
        z = torch.randn(n, self.config.n_dims, generator=generator, device=p.device, dtype=p.dtype)
        return self.inverse(z * temperature, compiled=compiled)

    # ------------------------------------------------------------------ training hooks
    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent initialisation of every ActNorm from one batch (train mode)."""
        self(x)

    def update_lipschitz(self, n_iterations: int | None = None) -> None:
        """Refine every spectral-norm estimate: ``n_iterations`` power iterations, or tolerance mode."""
        update_lipschitz(self, n_iterations, tol=self.config.sn_tol, max_iters=self.config.sn_max_iters)

    def reset_concat(self) -> None:
        """Hold the learnable concatenation at its initialisation (before ``lc_start_epoch``)."""
        for layer in dense_layers(self):
            layer.reset_concat()

    def concat_layers(self) -> list[DenseLayer]:
        return list(dense_layers(self))

    def num_parameters(self) -> int:
        """The authors' count: Σ numel over their trainable parameters. Theirs include each block's
        never-trained ``geom_p`` and ``lamb``; here those two are frozen (so that DDP needs no search
        for unused parameters) and still counted, so this is Σ numel over every parameter."""
        return sum(p.numel() for p in self.parameters())


def build_model(config: ModelConfig) -> Flow:
    """Build the flow a config describes (on the CPU, float32)."""
    return Flow(config)
