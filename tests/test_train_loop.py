"""The worker loop (sweeper/worker.py): learning in Train's local mode, exact resume from a checkpoint,
divergence without a stand-in score, and data parallelism that computes what one process computes:
after some steps on 2 workers every rank holds bit-equal parameters, and the run equals a 1-process
run of the same global batch to within float rounding (toy data with the exact log-determinant, so
no roulette draws or probes differ)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from model import RunConfig, TrainConfig, model_config, toy_config
from sweeper.checkpoint import load_model, load_state

# a small real-image flow: digits (1x8x8, 17 levels), 2 scales of 1 block, 1 FC block
DIGITS_MODEL = model_config(
    input_shape=(1, 8, 8), n_levels=17, blocks_per_scale=(1, 1), depth=2, growth=16, fc_blocks=1,
    activation="lipswish", lc_start_epoch=1,
)
DIGITS_TRAIN = TrainConfig(data="digits", epochs=3, batch_size=64, test_batch_size=300, ema_decay=0.9,
                           warmup_iters=10, seed=3)
DIGITS = RunConfig(DIGITS_MODEL, DIGITS_TRAIN)
N_TEST = 297
# toy data with the exact 2-D log-determinant in training too: a deterministic step
EXACT_TOY = RunConfig(toy_config(blocks_per_scale=(3,), depth=2, growth=8, brute_force=True, actnorm=True),
                      TrainConfig(data="moons", epochs=2, batch_size=64, steps_per_epoch=5, test_size=400, seed=1))


def run_local(run: RunConfig, saves: Path | None = None, resume_from: Path | None = None, **extra):
    """The loop with ScalingConfig(num_workers=0) in this process: (every epoch's report, return value).
    ``saves``: copy each epoch's checkpoint to saves/epoch<N>; ``resume_from``: start from that checkpoint."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from sweeper.worker import train_loop_per_worker

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
        result = TorchTrainer(train_loop_per_worker, train_loop_config={"run": run.to_dict(), **extra},
                              scaling_config=ray.train.ScalingConfig(num_workers=0)).fit()
    return reports, result.return_value


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    saves = tmp_path_factory.mktemp("local_ckpts")
    reports, summary = run_local(DIGITS, saves=saves)
    return reports, summary, saves


def test_local_mode_digits_bpd_falls(local_run):
    reports, summary, _ = local_run
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    scores = [r["test_bpd"] for r in reports]
    assert all(r["test_score"] == r["test_bpd"] for r in reports)
    assert scores[2] < scores[0] - 0.05, scores
    assert reports[-1]["best_val_score"] == min(r["val_score"] for r in reports)
    assert all(r["test_examples"] == N_TEST and r["val_examples"] == 150 and not r["diverged"] for r in reports)
    assert all(r["val_score"] != r["test_score"] for r in reports)  # two sets, two scores
    from model.flow import build_model

    assert reports[0]["param_count"] == build_model(DIGITS_MODEL).num_parameters()
    assert reports[-1]["iterations"] == 3 * (1350 // 64)  # 150 of the 1,500 training digits are for validation
    assert summary["status"] == "finished" and summary["epochs"] == 3
    assert [h["test_score"] for h in summary["history"]] == scores


def test_checkpoint_rebuilds_and_resumes_exactly(local_run, tmp_path):
    """Resuming from the epoch-1 checkpoint replays epochs 2 and 3 bit for bit (weights, EMA, Adam,
    warm-up counter and every RNG state, the shared roulette generator's included)."""
    reports, _, saves = local_run
    state = load_state(saves / "epoch1")
    assert state["epoch"] == 1 and state["step"]["iteration"] == 1350 // 64
    assert RunConfig.from_dict(state["run"]) == DIGITS and [h["epoch"] for h in state["history"]] == [1]
    model, _ = load_model(saves / "epoch3")
    assert model.num_parameters() == reports[0]["param_count"]
    assert json.loads((saves / "epoch3" / "meta.json").read_text())["epoch"] == 3

    resumed, summary = run_local(DIGITS, resume_from=saves / "epoch1")
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(resumed, reports[1:]):
        assert a["test_score"] == pytest.approx(b["test_score"], abs=1e-9)
        assert a["val_score"] == pytest.approx(b["val_score"], abs=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-9)
        assert a["param_crc"] == b["param_crc"]
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]  # the history continues too


def test_nan_ends_the_run_as_diverged_without_a_stand_in_score():
    reports, summary = run_local(DIGITS, inject_nan_at_epoch=2)
    assert [r["epoch"] for r in reports] == [1, 2]
    assert not reports[0]["diverged"] and math.isfinite(reports[0]["test_score"])
    assert reports[1]["diverged"] and math.isnan(reports[1]["test_score"]) and math.isnan(reports[1]["test_bpd"])
    assert summary["status"] == "diverged" and summary["best_val_score"] == reports[0]["val_score"]


def test_gpu_without_cuda_fails_with_one_line_naming_the_node():
    from model.errors import UserError
    from sweeper.worker import choose_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError) as info:
        choose_device("cuda")
    (line,) = info.value.lines()
    assert line.startswith("node ") and "no usable CUDA device" in line
    assert choose_device("cuda", cpu_if_no_cuda=True).type == "cpu"


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_equal_one_process_and_each_other(ray_session, tmp_path):
    """DDP over 2 gloo workers with half of every global batch: the ranks' parameters agree bit for
    bit every epoch, and every score, loss and parameter equals the 1-process run's to float rounding."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from sweeper.worker import train_loop_per_worker

    class RankLog(ray.train.UserCallback):  # defined here so that it is pickled by value
        """Writes every rank's metrics of each report (Train passes them all to callbacks)."""

        def __init__(self, path: str) -> None:
            self.path = path

        def after_report(self, run_context, metrics, checkpoint) -> None:  # noqa: ANN001
            with open(self.path, "a") as f:
                f.write(json.dumps([{k: m.get(k) for k in ("epoch", "param_crc", "test_score")} for m in metrics]) + "\n")

    single, _ = run_local(EXACT_TOY)
    log = tmp_path / "ranks.jsonl"
    result = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": EXACT_TOY.to_dict()},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="ddp2", storage_path=str(tmp_path), callbacks=[RankLog(str(log))],
                                       failure_config=ray.train.FailureConfig(controller_failure_limit=0)),
    ).fit()
    per_report = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(per_report) == 2 and all(len(ranks) == 2 for ranks in per_report)
    for ranks in per_report:
        assert ranks[0]["param_crc"] == ranks[1]["param_crc"]  # bit-equal parameters on both ranks
        assert ranks[0]["test_score"] == ranks[1]["test_score"]
    history = result.return_value["history"]
    # float32 gradients summed in another order, through Adam's sign-like first steps, move the
    # score by ~1e-5 (1.3e-5 seen): 1e-4 nats, far below the learning signal (checked below)
    for two, one in zip(history, single):
        assert two["test_score"] == pytest.approx(one["test_score"], abs=1e-4)
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert abs(single[1]["test_score"] - single[0]["test_score"]) > 1e-2  # one epoch's learning signal
    assert history[-1]["test_examples"] == 400 and history[-1]["iterations"] == single[-1]["iterations"]
    ddp_model, _ = load_model(result.checkpoint.path, use_ema=False)
    ckpt = Path(result.checkpoint.path)
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    assert load_state(ckpt)["world_size"] == 2
    # parameters: float32 reductions in another order, passed through Adam's first (sign-like) steps,
    # flip the update of the odd weight whose gradient is near zero (up to ~lr per step), so compare
    # the whole: the distance between the two runs' weights against the distance training moved them
    from model.flow import build_model

    one_model, _ = _local_final_model(tmp_path)
    torch.manual_seed(EXACT_TOY.train.seed)
    start = build_model(EXACT_TOY.model)
    net = [n for n, _ in one_model.named_parameters() if ".net." in n]  # ActNorm starts from the data anyway
    ddp, one, init = ({n: t.detach() for n, t in m.named_parameters()} for m in (ddp_model, one_model, start))
    diff = float(torch.cat([(ddp[n] - one[n]).flatten() for n in net]).norm())
    moved = float(torch.cat([(one[n] - init[n]).flatten() for n in net]).norm())
    assert diff < 0.02 * moved, (diff, moved)


def _local_final_model(tmp_path):
    saves = tmp_path / "single"
    saves.mkdir()
    run_local(EXACT_TOY, saves=saves)
    return load_model(saves / f"epoch{EXACT_TOY.train.epochs}", use_ema=False)


def test_a_worker_reads_the_cpus_ray_reserved_for_it(ray_session, tmp_path):
    """What sizes the loader (``loader_workers: null``): the worker's own ``resources_per_worker``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from sweeper.worker import reserved_cpus

    def report_reserved_cpus(config) -> float | None:  # noqa: ANN001  (defined here: pickled by value)
        from sweeper.worker import reserved_cpus

        return reserved_cpus()

    result = TorchTrainer(
        report_reserved_cpus,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 2}),
        run_config=ray.train.RunConfig(name="cpus", storage_path=str(tmp_path)),
    ).fit()
    assert result.return_value == 2.0
    assert reserved_cpus() is None  # the driver is no Ray worker
