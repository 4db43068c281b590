"""Search efficiency as evidence: learning curves recorded once, then the sweep's own searcher and
scheduler replayed against them many times in simulated time (:mod:`replay.curves`,
:mod:`replay.simulate`, :mod:`replay.compare`)."""
