"""A trial's start-up by phase (sweeper/startup.py): the arithmetic on hand-made points, and the points
the worker loop sends with its first report (Train's local mode)."""

from __future__ import annotations

import math
import time

import pytest

from sweeper.startup import KEY, line, phases


def test_phases_split_the_points_between_ray_and_the_project() -> None:
    points = {"trial_start": 100.0, "driver_entry": 101.5, "fit_called": 101.75, "worker_import_s": 0.5,
              "loop_entry": 110.0, "torch_imported": 111.5, "set_up": 111.75, "initialised": 112.0, "first_step": 112.5}
    p = phases(points)
    assert p["trial actor"] == 1.5 and p["trial driver"] == 0.25
    assert p["Train controller and workers"] == 110.0 - 101.75 - 0.5  # the worker's imports are the project's
    assert p["lazy imports"] == 1.5 == p["torch"]
    assert (p["worker imports"], p["data, model, step"], p["initialise or resume"], p["first step"]) == (0.5, 0.25, 0.25, 0.5)
    assert p["ray"] == 1.5 + 7.75 and p["project"] == 0.25 + 0.5 + 0.25 + 0.25 + 0.5
    assert p["total"] == 12.5 == p["ray"] + p["torch"] + p["project"]
    assert line(points) == ("start-up 12.5 s to the first step: Ray 9.2 s (trial actor 1.50, Train controller and "
                            "workers 7.75), torch 1.5 s (lazy imports 1.50), this project 1.8 s (trial driver 0.25, "
                            "worker imports 0.50, data, model, step 0.25, initialise or resume 0.25, first step 0.50)")


def test_the_benchmark_reads_back_every_phase_the_line_prints() -> None:
    from bench.startup import parse

    points = {"trial_start": 0.0, "driver_entry": 0.5, "fit_called": 0.75, "worker_import_s": 0.25, "loop_entry": 9.0,
              "torch_imported": 10.0, "set_up": 10.5, "initialised": 10.75, "first_step": 11.0}
    (row,) = parse(["[  12.0s] 1a2b3c4d " + line(points)])
    assert row == pytest.approx({k: round(v, 2) for k, v in phases(points).items()}, abs=0.051)


def test_a_missing_point_is_nan_not_a_made_up_figure() -> None:
    p = phases({"loop_entry": 5.0, "torch_imported": 5.5, "set_up": 6.0, "initialised": 6.5, "first_step": 7.0})
    assert math.isnan(p["trial actor"]) and math.isnan(p["total"]) and math.isnan(p["ray"])
    assert p["data, model, step"] == 0.5 and p["torch"] == 0.5


@pytest.mark.ray
def test_the_first_report_carries_the_workers_points_in_order_and_only_the_first() -> None:
    from test_train_loop import EXACT_TOY, run_local

    before = time.time()
    reports, summary = run_local(EXACT_TOY, **{KEY: {"driver_entry": before - 1.0, "fit_called": before}})
    first = reports[0][KEY]
    assert first["driver_entry"] == before - 1.0 and first["fit_called"] == before  # the driver's, passed on
    order = [first[k] for k in ("fit_called", "loop_entry", "torch_imported", "set_up", "initialised", "first_step")]
    assert order == sorted(order) and first["first_step"] <= time.time()
    assert 0.0 <= first["worker_import_s"] < 60.0
    assert all(KEY not in r for r in reports[1:])
    assert all(KEY not in h for h in summary["history"])  # nor in the history checkpoints keep
