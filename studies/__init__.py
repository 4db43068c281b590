"""Experiments composed of sweeps, runs and checkpoints: the paper's toy results (``reproduce``),
budget-matched scaling across budgets (``scaling``), the learned concatenation weights of a
checkpoint (``eta``). Each is an ``idensenet`` command (``main(argv)``); they import ``sweeper``,
``figures``, ``search_spaces`` and ``model``, and nothing imports them but the CLI."""
