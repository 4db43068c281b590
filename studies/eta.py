"""``idensenet eta CHECKPOINT``: the learned concatenation weights of a checkpoint (paper Figure 10).

Each dense layer outputs [η̂₁·x, η̂₂·φ(Wx)] with η = softplus(K) + 0.1 and η̂ = lip_coeff·η/‖η‖
(paper §3.3, eq. 9). This writes one heatmap per η̂ (rows: the blocks, scale by scale and then the
fully connected blocks; columns: the dense layers of a block) as ``eta.png`` and every value as
``eta.csv`` (scale, block, layer, eta1_hat, eta2_hat). Weights are the checkpoint's EMA weights, the
ones it is evaluated with. CHECKPOINT is a checkpoint folder (local or a URI) of a sweep trial or a
full run.
"""

from __future__ import annotations

import os
from typing import Any


def eta_rows(model) -> list[dict[str, Any]]:  # noqa: ANN001
    """(scale, block, layer, η̂₁, η̂₂) of every dense layer, in flow order; ``scale`` is "fc" for
    the fully connected blocks after the last scale."""
    from model.dense import DenseFCNet, dense_layers
    from model.iresblock import InvertibleResBlock
    from model.layers import Squeeze

    rows, scale, block = [], 1, 0
    for step in model.steps:
        if isinstance(step, Squeeze):
            scale, block = scale + 1, 0
        if not isinstance(step, InvertibleResBlock):
            continue
        where = "fc" if isinstance(step.net, DenseFCNet) else str(scale)
        block += 1
        for i, layer in enumerate(dense_layers(step), start=1):
            e1, e2 = (float(v) for v in layer.eta_hat().detach())
            rows.append({"scale": where, "block": block, "layer": i, "eta1_hat": e1, "eta2_hat": e2})
    return rows


def run(args: Any) -> int:
    """``idensenet eta`` (its arguments: :mod:`studies.cli`)."""
    from model.errors import UserError

    from sweeper.checkpoint import STATE_FILE, load_model
    from sweeper.storage import locate

    ckpt = locate(args.checkpoint)
    if not ckpt.join(STATE_FILE).is_file():
        raise UserError(f"{args.checkpoint}: not a checkpoint folder (no {STATE_FILE})")
    with ckpt.local_copy() as d:
        model, state = load_model(d)
    rows = eta_rows(model)
    if not rows:
        raise UserError(f"{args.checkpoint}: this model has no dense layers (a model of another family?)")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {args.out}: {err.strerror}") from None
    import pandas as pd

    csv, png = os.path.join(args.out, "eta.csv"), os.path.join(args.out, "eta.png")
    pd.DataFrame(rows).to_csv(csv, index=False)
    from figures.studies import concatenation_weights

    concatenation_weights(rows, png, f"{args.checkpoint.rstrip('/').split('/')[-1]}, epoch {state.get('epoch')}")
    print(f"{len(rows)} dense layers\nvalues: {csv}\nfigure: {png}")
    return 0
