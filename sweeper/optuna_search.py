"""Ray's OptunaSearch with three adjustments for Train-inside-Tune sweeps.

* Intermediate values are reported at ``result["epoch"]`` rather than Tune's ``training_iteration``,
  which restarts at 1 after ``Tuner.restore`` (ray-notes §2, caveat a).
* Each Optuna trial records its Tune trial id (user attr ``tune_trial_id``), so the study and the
  experiment folder can be joined (optuna-dashboard shows it).
* Completion records ``epochs_run`` and ``diverged``; a trial ASHA stopped is told COMPLETE with its
  last (truncated-fidelity) score, as Ray does; ``epochs_run`` tells it apart.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class IdnOptunaSearch(OptunaSearch):
    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr("tune_trial_id", trial_id)
        return config

    def _stored(self, trial_id: str):
        """The Optuna trial as stored (None when unknown); finished trials cannot be updated."""
        trial = self._ot_trials.get(trial_id)
        if trial is None:
            return None
        try:
            return trial.storage.get_trial(trial._trial_id)
        except (AttributeError, KeyError):  # pragma: no cover - other optuna versions
            return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        value = result.get(self.metric)
        stored = self._stored(trial_id)
        if value is None or (stored is not None and (stored.state.is_finished() or step in stored.intermediate_values)):
            return  # a finished trial, or an epoch reported before an interruption
        self._ot_trials[trial_id].report(float(value), step)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        stored = self._stored(trial_id)
        if stored is not None and stored.state.is_finished():
            self._completed_trials.add(trial_id)
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials and result:
            ot_trial.set_user_attr("epochs_run", int(result.get("epoch", 0)))
            ot_trial.set_user_attr("diverged", bool(result.get("diverged", False)))
        super().on_trial_complete(trial_id, result=result, error=error)
