"""Every PNG the project draws (matplotlib, Agg backend): curves of score against epoch, toy
densities, image sample grids, Optuna's views of a study. Figures are written to a path or a binary
file object; the callers decide where (a sweep's folder, local or remote). Imports ``model`` only."""
