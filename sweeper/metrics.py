"""The keys of an epoch's report that decisions and reports read (one place, every module uses these).

* ``val_score``: the score on the validation set (:mod:`model.data`): what ASHA, the searcher,
  checkpoint retention, ``best`` and the figures decide on.
* ``test_score``: the score on the test set, reported for the configurations selected on validation.
* ``best_val_score``: the best validation score of the run so far.
* ``diverged``: true in the report of the epoch at which a step or a score stopped being finite (the
  run's last report; its scores are NaN).
"""

VAL, TEST, BEST_VAL, DIVERGED = "val_score", "test_score", "best_val_score", "diverged"
