"""Intervals over seeds and the confirmation's verdict wording, against hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sweeper.confirm import summarise, verdict
from sweeper.intervals import mean_interval, paired_difference

T_975_2 = 4.302652729911275  # Student's t, 97.5 % quantile, 2 degrees of freedom (printed tables: 4.303)


def test_mean_interval_by_hand() -> None:
    iv = mean_interval([2.0, 2.5, 3.0])
    half = T_975_2 * 0.5 / math.sqrt(3)  # sd = 0.5
    assert (iv.n, iv.mean, iv.sd) == (3, pytest.approx(2.5), pytest.approx(0.5))
    assert (iv.low, iv.high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    assert iv.low == pytest.approx(1.2579311, abs=1e-7) and iv.excludes_zero
    one = mean_interval([4.0])
    assert one.mean == 4.0 and math.isnan(one.low) and not one.excludes_zero and "no interval" in one.text()


def test_paired_difference_by_hand() -> None:
    shown = paired_difference({1: 2.0, 2: 2.1, 3: 2.2}, {1: 2.5, 2: 2.4, 3: 2.9})  # d = -0.5, -0.3, -0.7
    assert shown.mean == pytest.approx(-0.5) and shown.sd == pytest.approx(0.2)
    assert shown.high == pytest.approx(-0.5 + T_975_2 * 0.2 / math.sqrt(3)) == pytest.approx(-0.0031725, abs=1e-7)
    assert shown.excludes_zero
    # d = -0.5, +0.1, -0.2: mean -0.2, sd 0.3; the interval holds 0
    not_shown = paired_difference({1: 2.0, 2: 2.6, 3: 2.2}, {1: 2.5, 2: 2.5, 3: 2.4})
    assert not_shown.mean == pytest.approx(-0.2) and not_shown.sd == pytest.approx(0.3)
    assert not_shown.low < 0 < not_shown.high and not not_shown.excludes_zero
    # a seed only one side has is not paired
    assert paired_difference({1: 1.0, 2: 2.0, 9: 5.0}, {1: 1.5, 2: 2.0}).n == 2


def _runs(dense: list[float], ref: list[float]) -> pd.DataFrame:
    rows = [{"arm": "searched t1", "seed": s, "test": v, "val": v, "status": "terminated",
             "describe": "idensenet depth 3 growth 20 lipswish lr 0.01"} for s, v in enumerate(dense, 1)]
    rows += [{"arm": "reference t2", "seed": s, "test": v, "val": v, "status": "terminated",
              "describe": "resflow toy_hidden 24 lipswish lr 0.005"} for s, v in enumerate(ref, 1)]
    return pd.DataFrame(rows)


def test_summary_and_verdict_wording() -> None:
    table = summarise(_runs([2.0, 2.1, 2.2], [2.5, 2.4, 2.9])).set_index("arm")
    assert table.loc["searched t1", "diff"] == pytest.approx(-0.5)
    assert table.loc["searched t1", "test_low"] == pytest.approx(2.1 - T_975_2 * 0.1 / math.sqrt(3))
    line = verdict(summarise(_runs([2.0, 2.1, 2.2], [2.5, 2.4, 2.9])), "nats")
    assert "difference -0.500 nats (95% CI -0.997 to -0.003)" in line and line.endswith("the i-DenseNet is better")
    line = verdict(summarise(_runs([2.0, 2.6, 2.2], [2.5, 2.5, 2.4])), "nats", "the control arm: not searched")
    assert line.endswith("no difference shown at 3 seeds") and "the control arm: not searched" in line
    assert verdict(summarise(_runs([], [2.5, 2.4])), "nats").startswith("verdict: no i-DenseNet")
