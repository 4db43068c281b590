"""The per-worker loop: learning in Train's local mode, exact resume from a checkpoint, divergence
handling, and a 2-worker DDP run that reports what one process reports (within estimator noise)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from model.config import ModelConfig
from sweeper.checkpointing import load_model, load_state
from sweeper.train_config import DIVERGED_SCORE

# a small real-image flow: digits (1x8x8, 17 levels), 2 scales of 1 block, 1 FC block
DIGITS_MODEL = ModelConfig(
    input_shape=(1, 8, 8), n_levels=17, blocks_per_scale=(1, 1), depth=2, growth=16, fc_blocks=1,
    activation="lipswish", lc_start_epoch=1,
)
DIGITS_TRAIN = {"data": "digits", "epochs": 3, "batch_size": 64, "test_batch_size": 300,
                "ema_decay": 0.9, "warmup_iters": 10, "seed": 3}
N_TEST = 297


def run_local(model: ModelConfig, train: dict, saves: Path | None = None, resume_from: Path | None = None):
    """Run the loop with ScalingConfig(num_workers=0) in this process; return every epoch's report.
    ``saves``: copy each epoch's checkpoint to saves/epoch<N>; ``resume_from``: start from that checkpoint."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from sweeper.train_loop import train_loop_per_worker

    reports: list[dict] = []
    original = ray.train.report

    def recording_report(metrics, checkpoint=None, **kw):
        reports.append(dict(metrics))
        if checkpoint is not None and saves is not None:
            shutil.copytree(checkpoint.path, saves / f"epoch{metrics['epoch']}")
        return original(metrics, checkpoint=checkpoint, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray.train, "report", recording_report)
        if resume_from is not None:
            mp.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint(str(resume_from)))
        torch.set_num_threads(1)
        TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"model": model.to_dict(), "train": dict(train)},
            scaling_config=ray.train.ScalingConfig(num_workers=0),
        ).fit()
    return reports


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    saves = tmp_path_factory.mktemp("local_ckpts")
    return run_local(DIGITS_MODEL, DIGITS_TRAIN, saves=saves), saves


def test_local_mode_digits_bpd_falls(local_run):
    reports, _ = local_run
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    scores = [r["test_bpd"] for r in reports]
    assert all(r["test_score"] == r["test_bpd"] for r in reports)
    assert scores[2] < scores[0] - 0.05, scores
    assert reports[-1]["best_test_score"] == min(scores)
    assert all(r["test_examples"] == N_TEST and not r["diverged"] for r in reports)
    from model.flow import build_model

    assert reports[0]["param_count"] == build_model(DIGITS_MODEL).num_parameters()
    assert reports[-1]["iterations"] == 3 * (1500 // 64)


def test_checkpoint_rebuilds_and_resumes_exactly(local_run, tmp_path):
    """Resuming from the epoch-1 checkpoint replays epochs 2 and 3 bit for bit (weights, EMA, Adam,
    warm-up counter and every RNG state are in the checkpoint)."""
    reports, saves = local_run
    state = load_state(saves / "epoch1")
    assert state["epoch"] == 1 and state["iteration"] == 1500 // 64
    assert ModelConfig.from_dict(state["model_config"]) == DIGITS_MODEL
    model, _ = load_model(saves / "epoch3")
    assert model.num_parameters() == reports[0]["param_count"]

    resumed = run_local(DIGITS_MODEL, DIGITS_TRAIN, resume_from=saves / "epoch1")
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(resumed, reports[1:]):
        assert a["test_score"] == pytest.approx(b["test_score"], abs=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-9)


def test_nan_loss_ends_run_as_diverged():
    train = {**DIGITS_TRAIN, "epochs": 3, "inject_nan_at_epoch": 2}
    reports = run_local(DIGITS_MODEL, train)
    assert [r["epoch"] for r in reports] == [1, 2]
    assert not reports[0]["diverged"] and math.isfinite(reports[0]["test_score"])
    assert reports[1]["diverged"] and reports[1]["test_score"] == DIVERGED_SCORE


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_report_the_one_process_score(ray_session, local_run, tmp_path):
    """DDP over 2 gloo workers, each with half of every batch: the all-reduced test bpd (over the
    whole test set) matches the single-process run of the same seed within estimator noise."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from sweeper.train_loop import train_loop_per_worker

    reports, _ = local_run
    result = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"model": DIGITS_MODEL.to_dict(), "train": dict(DIGITS_TRAIN)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="ddp2", storage_path=str(tmp_path),
                                       failure_config=ray.train.FailureConfig(controller_failure_limit=0)),
    ).fit()
    m = result.metrics
    assert m["epoch"] == 3 and m["test_examples"] == N_TEST
    assert m["iterations"] == reports[-1]["iterations"]
    assert abs(m["test_bpd"] - reports[-1]["test_bpd"]) < 0.05, (m["test_bpd"], reports[-1]["test_bpd"])
    ckpt = Path(result.checkpoint.path)
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    assert load_state(ckpt)["world_size"] == 2
