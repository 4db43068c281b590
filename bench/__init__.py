"""Benchmarks of the training step, evaluation, sampling, parameter counting and Ray overhead.

``python -m bench.run`` (or ``idensenet bench``) prints a JSON table; see :mod:`bench.run`.
"""
