"""``idensenet eta`` (paper Figure 10) against η̂ computed from the formula of §3.3, and ``idensenet
reproduce toy`` (Table 1 / Figure 3) end to end on one data set at a few hundred iterations."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from model.config import model_config
from model.data import TOY_IDENTITY_NLL
from model.dense import dense_layers
from model.flow import build_model
from model.run_config import RunConfig
from model.train_config import TrainConfig
from model.train_step import TrainStep
from sweeper.checkpoint import capture_rng, save_checkpoint
from sweeper.cli import main


def test_eta_csv_holds_the_normalised_weights_of_every_dense_layer(tmp_path: Path) -> None:
    cfg = model_config(input_shape=(1, 8, 8), blocks_per_scale=(2, 1), depth=3, growth=8, fc_blocks=1, n_levels=17,
                      lip_coeff=0.9)
    torch.manual_seed(3)
    model = build_model(cfg)
    layers = dense_layers(model)
    with torch.no_grad():
        for layer in layers:
            layer.K.copy_(torch.randn(2) * 2)
    run = RunConfig(cfg, TrainConfig(data="digits", batch_size=4))
    step = TrainStep(model, run.train)  # EMA starts at these weights, which the command reads
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, 0, {"model": model.state_dict(), "step": step.state_dict(), "epoch": 2,
                              "history": [], "run": run.to_dict()}, capture_rng(), {"epoch": 2})
    assert main(["eta", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    df = pd.read_csv(tmp_path / "out" / "eta.csv")
    # (2 + 1) conv blocks and 1 FC block of depth 3
    assert len(df) == len(layers) == 4 * 3
    assert list(df["scale"].astype(str)) == ["1"] * 6 + ["2"] * 3 + ["fc"] * 3
    for row, layer in zip(df.itertuples(), layers):
        eta = torch.nn.functional.softplus(layer.K.detach().double()) + 0.1  # eq. of §3.3
        expect = 0.9 * eta / eta.norm()
        assert (row.eta1_hat, row.eta2_hat) == pytest.approx(expect.tolist(), rel=1e-6)
    assert (tmp_path / "out" / "eta.png").stat().st_size > 1000


def test_eta_refuses_a_folder_that_is_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["eta", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a checkpoint folder" in err[0]


@pytest.mark.slow
@pytest.mark.ray
def test_reproduce_toy_on_moons(ray_session, tmp_path: Path) -> None:
    out = tmp_path / "repro"
    assert main(["reproduce", "toy", "--iters", "200", "--data", "moons", "--out", str(out)]) == 0
    df = pd.read_csv(out / "reproduce-toy.csv")
    assert sorted(df["model"]) == sorted(["resflow", "idensenet", "idensenet-lc", "resflow-matched"])
    assert set(df["data"]) == {"moons"} and (df["iterations"] == 200).all()
    assert all(math.isfinite(v) and v < TOY_IDENTITY_NLL["moons"] for v in df["test_nll"])
    counts = dict(zip(df["model"], df["parameters"]))
    assert counts["resflow"] == 501_850 and counts["idensenet-lc"] == 10_250 and counts["idensenet"] == 10_190
    assert abs(counts["resflow-matched"] / counts["idensenet-lc"] - 1) <= 0.03
    assert (out / "reproduce-toy.png").stat().st_size > 5000
