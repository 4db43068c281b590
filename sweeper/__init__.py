"""Ray Train / Tune plumbing for budget-matched i-DenseNet searches: the per-worker training loop,
the trial driver, the Tuner, results, best-config export, full runs and the ``idensenet`` CLI.

Nothing here is imported by ``model/`` or ``search_spaces/``; submodules import Ray lazily where they
can, so ``idensenet --help`` and the non-Ray subcommands stay fast.
"""

from __future__ import annotations

from .errors import UserError

__all__ = ["UserError"]
