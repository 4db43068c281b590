"""The keys of an epoch's report that decisions and reports read (one place, every module uses these).

* ``val_score``: the score on the validation set (:mod:`model.data`): what ASHA, the searcher,
  checkpoint retention, ``best`` and the figures decide on.
* ``test_score``: the score on the test set, reported for the configurations selected on validation.
* ``best_val_score``: the best validation score of the run so far.
"""

VAL, TEST, BEST_VAL = "val_score", "test_score", "best_val_score"
