"""Evaluation and inversion with every block's g compiled by ``torch.compile`` (the train config's
``fused`` for scoring; ``Flow.sample(compiled=True)`` for sampling).

Scoring a batch runs, in every block, g's forward and then the vector-Jacobian products vᵀJ_g of the
log-determinant's power series (paper eq. 3: 20 exact terms plus the roulette in evaluation) or of
the exact 2-D log-determinant: first-order gradients with respect to the block's input only, which
AOT autograd compiles (its refusal of double backward only concerns training, which stays eager).

Inside :func:`compiled_evaluation`:

* each :class:`model.iresblock.InvertibleResBlock` in evaluation mode calls ``torch.compile(net)``
  instead of ``net``; blocks of one structure and shape share a compiled graph, because dynamo
  treats a module's parameters as graph inputs;
* the parameters are frozen (``requires_grad=False``) and restored on exit: a compiled backward
  computes the gradient of every input that requires one, so with trainable weights each
  vector-Jacobian product would also compute the weights' gradients, which the estimator discards;
* the backward runs with ``retain_graph=True`` (one forward serves every term of the series), which
  AOT autograd allows only without donated buffers, so those are off while compiling and running.

Every batch size after the first one seen is compiled once more with a dynamic batch dimension
(dynamo's automatic dynamic shapes), so the last, smaller batch of a set costs one recompilation in
the first epoch and none afterwards; the number of series terms changes the number of calls, not the
graphs. The inverse (paper §3.2: the fixed-point iteration x ← y − g(x)) runs g without autograd,
which is one more graph per shape (dynamo guards on the grad mode), compiled once whatever number of
iterations a block needs.

``mode="reduce-overhead"`` asks torch.compile for CUDA graphs (on a GPU; shapes are static within a
set except for its last batch); the blocks recompile when the mode changes. ``tests/test_compiled_eval.py`` checks that the scores equal eager evaluation's to float
rounding on the same draws and that a second epoch compiles nothing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .iresblock import InvertibleResBlock

#: compiled graphs dynamo may hold per code object: a flow's blocks share one ``forward`` per class,
#: with one graph per scale's shape and a dynamic-batch one of each (torch's default is 8)
RECOMPILE_LIMIT = 64


def _blocks(model: nn.Module) -> list[InvertibleResBlock]:
    return [m for m in model.modules() if isinstance(m, InvertibleResBlock)]


@contextlib.contextmanager
def compiled_evaluation(model: nn.Module, mode: str | None = None) -> Iterator[None]:
    """Within: every block's g runs compiled in evaluation mode (scoring and inversion), the
    parameters frozen (see the module docstring); the compiled modules are made on first use, with
    torch.compile's ``mode``, and kept on the blocks."""
    import torch._dynamo.config as dynamo_config
    import torch._functorch.config as functorch_config

    blocks = _blocks(model)
    if blocks and all(block.use_compiled for block in blocks):  # already inside: the outer context rules
        yield
        return
    for block in blocks:
        if block.compiled_net is None or block.compiled_mode != mode:
            object.__setattr__(block, "compiled_net", torch.compile(block.net, mode=mode))
            block.compiled_mode = mode
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    for block in blocks:
        block.use_compiled = True
    try:
        with functorch_config.patch(donated_buffer=False), dynamo_config.patch(recompile_limit=RECOMPILE_LIMIT):
            yield
    finally:
        for block in blocks:
            block.use_compiled = False
        for p in frozen:
            p.requires_grad_(True)
