"""The Ray layer of budget-matched i-DenseNet searches: the worker loop (:mod:`sweeper.worker`), the
trial driver (:mod:`sweeper.trial`), the Tuner with its searcher and scheduler (:mod:`sweeper.sweep`,
:mod:`sweeper.search`), placement, storage, results, full runs and the ``idensenet`` CLI. Nothing in
``model/``, ``search_spaces/`` or ``figures/`` imports it; ``studies/`` builds on it."""
