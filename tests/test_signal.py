"""Signal preservation (paper Table 5 / Table 8) against float64 reference values (the constants below)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import studies.signal as signal
from studies.signal import format_table, signal_preservation, signal_table
from sweeper.cli import main

# float64 reference, Table 5 (std 1): mean over seeds 0-2 of (mean, max)
TABLE5 = {
    1: {"sigmoid": (0.2183, 0.2500), "lipswish": (0.4559, 0.9997), "clipswish": (0.7240, 0.9999)},
    128: {"sigmoid": (0.2085, 0.2233), "lipswish": (0.5067, 0.6370), "clipswish": (0.7148, 0.7717)},
    1024: {"sigmoid": (0.2083, 0.2139), "lipswish": (0.5072, 0.5541), "clipswish": (0.7146, 0.7337)},
}
# Table 8 (std 5), D = 1
TABLE8_D1 = {"sigmoid": 0.0908, "lipswish": 0.4716, "clipswish": 0.8268}
MEAN_TOL = 0.005  # reference spread: +-0.002 (+-0.003 at D = 1) for 1e5 pairs
MAX_TOL = 0.02
LIP = {"sigmoid": 0.25, "lipswish": 0.99985393, "clipswish": 1.0039650400326 / 1.004, "identity": 1.0}


@pytest.fixture(scope="module")
def table5_rows() -> list[dict]:
    return signal_table(dims=(1, 128), n_pairs=100_000, std=1.0, seed=0)


def _cell(rows: list[dict], act: str, d: int) -> dict:
    (row,) = [r for r in rows if r["activation"] == act and r["dims"] == d]
    return row


@pytest.mark.parametrize("d", [1, 128])
@pytest.mark.parametrize("act", ["sigmoid", "lipswish", "clipswish"])
def test_table5_full_sample(table5_rows: list[dict], act: str, d: int) -> None:
    row = _cell(table5_rows, act, d)
    mean, mx = TABLE5[d][act]
    assert row["mean"] == pytest.approx(mean, abs=MEAN_TOL)
    assert row["max"] == pytest.approx(mx, abs=MAX_TOL)
    assert row["max"] <= LIP[act] + 1e-12


def test_identity_is_one(table5_rows: list[dict]) -> None:
    for d in (1, 128):
        row = _cell(table5_rows, "identity", d)
        assert row["mean"] == 1.0 and row["max"] == 1.0


def test_table5_d1024_fewer_pairs() -> None:
    rows = signal_table(dims=(1024,), n_pairs=4_000, std=1.0, seed=1)
    for act in ("sigmoid", "lipswish", "clipswish"):
        assert _cell(rows, act, 1024)["mean"] == pytest.approx(TABLE5[1024][act][0], abs=MEAN_TOL)
    assert _cell(rows, "identity", 1024)["mean"] == 1.0


def test_table8_std5_d1() -> None:
    rows = signal_table(dims=(1,), n_pairs=100_000, std=5.0, seed=0)
    for act, mean in TABLE8_D1.items():
        assert _cell(rows, act, 1)["mean"] == pytest.approx(mean, abs=MEAN_TOL)


def test_single_activation_matches_table_row(table5_rows: list[dict]) -> None:
    single = signal_preservation("clipswish", 128, n_pairs=100_000, std=1.0, seed=0)
    row = _cell(table5_rows, "clipswish", 128)
    assert single == {"mean": row["mean"], "max": row["max"]}


def test_independent_of_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    big = signal_preservation("lipswish", 16, n_pairs=3_000, seed=4)
    monkeypatch.setattr(signal, "_CHUNK_VALUES", 100)
    small = signal_preservation("lipswish", 16, n_pairs=3_000, seed=4)
    assert small["max"] == big["max"]
    assert small["mean"] == pytest.approx(big["mean"], rel=1e-12)


def test_against_direct_numpy_formula() -> None:
    """Recompute a small case with explicit CLipSwish vectors (no algebraic shortcut)."""
    beta = math.log1p(math.exp(0.5))
    n, d = 500, 8
    ss = np.random.SeedSequence(3).spawn(2)
    v = np.random.default_rng(ss[0]).standard_normal((n, d)) * 2.0
    w = np.random.default_rng(ss[1]).standard_normal((n, d)) * 2.0

    def lipswish(x: np.ndarray) -> np.ndarray:
        return x / (1 + np.exp(-beta * x)) / 1.1

    def clip(x: np.ndarray) -> np.ndarray:
        return np.concatenate([lipswish(x), lipswish(-x)], axis=1) / 1.004

    ratio = np.linalg.norm(clip(v) - clip(w), axis=1) / np.linalg.norm(v - w, axis=1)
    got = signal_preservation("clipswish", d, n_pairs=n, std=2.0, seed=3)
    assert got["mean"] == pytest.approx(ratio.mean(), rel=1e-12)
    assert got["max"] == pytest.approx(ratio.max(), rel=1e-12)


def test_format_and_main(capsys: pytest.CaptureFixture[str]) -> None:
    rows = signal_table(dims=(1, 4), n_pairs=200, seed=0)
    text = format_table(rows)
    assert "CLipSwish" in text and "D=4" in text and len(text.splitlines()) == 6
    assert main(["signal", "--dims", "1", "4", "--pairs", "200", "--std", "5"]) == 0
    out = capsys.readouterr().out
    assert "Identity" in out and "1.0000" in out


def test_unknown_activation() -> None:
    with pytest.raises(ValueError):
        signal_preservation("relu", 4, n_pairs=10)
