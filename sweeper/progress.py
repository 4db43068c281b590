"""A concise progress line per trial event (Tune's own table is silenced with ``verbose=0``)."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback


def _short(trial) -> str:
    return str(trial.trial_id)


def describe_config(config: dict[str, Any]) -> str:
    m = config.get("model") or {}
    parts = [f"{m.get('family', '?')}", f"depth={m.get('depth')}", f"growth={m.get('growth')}",
             f"act={m.get('activation')}"]
    if "param_count" in config:
        parts.append(f"params={config['param_count']:,}")
    if config.get("budget_deviation") is not None:
        parts.append(f"dev={100 * float(config['budget_deviation']):+.2f}%")
    return " ".join(parts)


class ProgressPrinter(Callback):
    """Prints ``[trial] epoch e/E  test 3.210 (best 3.190)  train 3.300  12.3 s`` and final statuses."""

    def __init__(self, epochs: int, metric_label: str = "test") -> None:
        self.epochs = epochs
        self.metric_label = metric_label
        self._t0 = time.time()

    def _say(self, text: str) -> None:
        print(f"[{time.time() - self._t0:7.1f}s] {text}", file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say(f"{_short(trial)} started: {describe_config(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("diverged"):
            self._say(f"{_short(trial)} epoch {result.get('epoch')}/{self.epochs}  DIVERGED (non-finite loss)")
            return
        if "test_score" not in result:
            return
        self._say(
            f"{_short(trial)} epoch {result.get('epoch')}/{self.epochs}  {self.metric_label} "
            f"{result['test_score']:.4f} (best {result.get('best_test_score', float('nan')):.4f})  "
            f"train {result.get('train_loss', float('nan')):.4f}  {result.get('epoch_seconds', 0.0):.1f} s"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epoch = last.get("epoch", 0)
        if last.get("diverged"):
            status = "diverged"
        elif epoch < self.epochs:
            status = f"stopped by ASHA after {epoch} epoch(s)"
        else:
            status = "finished"
        best = last.get("best_test_score")
        self._say(f"{_short(trial)} {status}" + (f", best {best:.4f}" if best is not None else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"{_short(trial)} ERROR (details in {trial.local_path or trial.path})")
