"""The results table from trial records (sweeper/table.py, no Ray needed): statuses, scores,
order, the difference to the control arm, the verdicts, and best.yaml entries. The records are
what ``trial_records`` reads through Ray from a real experiment (tested on real sweeps in
test_sweep.py); here they are written out so every status and edge case appears once."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from model import RunConfig, TrainConfig, toy_config
from sweeper.run_reader import SavedCheckpoint
from sweeper.storage import Location
from sweeper.report import load_best_entry
from sweeper.table import control_screen, family_verdict, table_from_records
from model.errors import UserError

EPOCHS = 3
# trial id -> (Tune status, role, family, per-epoch validation scores (None: diverged), depth); each
# epoch's test score is its validation score + TEST_OFFSET unless given
TRIALS = {
    "aaaa0001": ("TERMINATED", "search", "idensenet", [3.6, 3.4, 3.30], 2),  # finished
    "aaaa0002": ("TERMINATED", "search", "idensenet", [3.5], 3),  # stopped by ASHA after epoch 1
    "aaaa0003": ("TERMINATED", "search", "idensenet", [3.9, None], 4),  # diverged in epoch 2
    "aaaa0004": ("ERROR", "search", "idensenet", [3.1], 5),  # best score, but the trial failed
    "aaaa0005": ("RUNNING", "search", "idensenet", [3.45, 3.35], 3),  # still running / interrupted
    "cccc0000": ("TERMINATED", "control", "resflow", [3.7, 3.5, 3.40], None),  # the control arm
}


TEST_OFFSET = 0.05


def _record(tid: str, status: str, role: str, family: str, scores: list, depth: int | None,
            tests: list | None = None) -> dict:
    model = toy_config(blocks_per_scale=(2,), depth=depth or 3, family=family, toy_hidden=(8, 8))
    run = RunConfig(model, TrainConfig(data="moons", epochs=EPOCHS, lr=1e-3 * (depth or 1)))
    epochs = []
    for e, s in enumerate(scores, start=1):
        test = math.nan if s is None else (tests[e - 1] if tests else s + TEST_OFFSET)
        epochs.append({"epoch": e, "val_score": math.nan if s is None else s, "test_score": test, "diverged": s is None})
    kept = [SavedCheckpoint(Location(f"/ckpt/{tid}/{e}", f"/ckpt/{tid}/{e}", False), e, epochs[:e])
            for e, s in enumerate(scores, start=1) if s is not None]
    info = {"role": role, "label": "resflow" if role == "control" else "", "param_count": 1000 + (depth or 0),
            "budget_deviation": 0.001 * (depth or 0), "width": 8}
    return {"trial_id": tid, "status": status, "config": {"run": run.to_dict(), "trial": info}, "epochs": epochs,
            "checkpoints": kept[-2:], "path": f"/exp/trial_{tid}"}


@pytest.fixture()
def df():
    return table_from_records([_record(t, *v) for t, v in TRIALS.items()], EPOCHS, "test_nll")


def test_table_statuses_scores_and_order(df):
    assert len(df) == len(TRIALS)
    assert dict(zip(df["trial"], df["status"])) == {
        "aaaa0001": "finished", "aaaa0002": "stopped (ASHA)", "aaaa0003": "diverged", "aaaa0004": "error",
        "aaaa0005": "incomplete", "cccc0000": "finished"}
    row = df.set_index("trial").loc["aaaa0001"]
    assert row["best_val"] == 3.30 and row["best_epoch"] == 3 and row["epochs_run"] == 3
    assert row["test"] == pytest.approx(3.30 + TEST_OFFSET)  # the test score of the epoch chosen on validation
    assert row["depth"] == 2 and row["param_count"] == 1002 and row["budget_dev_pct"] == pytest.approx(0.2)
    assert row["best_checkpoint"] == "/ckpt/aaaa0001/3" and row["role"] == "search"
    div = df.set_index("trial").loc["aaaa0003"]
    assert div["best_val"] == 3.9 and div["epochs_run"] == 2  # the diverged epoch is not a score
    scored = df["best_val"].dropna().tolist()
    assert scored == sorted(scored)  # best first
    ctrl = df.set_index("trial").loc["cccc0000"]
    assert ctrl["family"] == "resflow" and ctrl["hidden"] == 8 and pd.isna(ctrl["depth"])


def test_difference_to_the_control_at_the_same_epoch(df):
    vs = dict(zip(df["trial"], df["vs_control"]))
    assert vs["aaaa0001"] == pytest.approx(3.30 - 3.40)  # epoch 3 against the control's epoch 3
    assert vs["aaaa0002"] == pytest.approx(3.5 - 3.7)  # stopped after epoch 1: the control's epoch 1
    assert vs["aaaa0005"] == pytest.approx(3.35 - 3.5)
    assert vs["cccc0000"] == 0.0


def test_selection_reads_validation_and_reports_that_epochs_test_score():
    """Validation is best at epoch 1, test at epoch 2: the table selects epoch 1 and reports its test
    score, never the test set's own minimum."""
    rec = _record("eeee0001", "TERMINATED", "search", "idensenet", [3.2, 3.3, 3.4], 2, tests=[3.5, 3.1, 3.6])
    row = table_from_records([rec], EPOCHS, "test_nll").iloc[0]
    assert (row["best_val"], row["best_epoch"], row["test"]) == (3.2, 1, 3.5)


def test_the_sweep_screens_and_leaves_the_verdict_to_confirmation(df):
    line = control_screen(df, "nats")
    assert line.startswith("screening (one run each, validation)") and "aaaa0001" in line
    assert "3.300 nats" in line and "3.400 nats" in line and "idensenet confirm" in line
    assert family_verdict(df, "nats") == "best validation score per family: idensenet 3.300 nats, resflow 3.400 nats"
    assert control_screen(df[df["role"] != "control"], "nats") is None
    empty = table_from_records([], EPOCHS, "test_nll")  # what `results` reads before any trial is recorded
    assert control_screen(empty, "nats") is None and family_verdict(empty, "nats") is None
    from figures.study import family_curves

    assert family_curves(empty, "nats")[:4] == b"\x89PNG"  # `results --plots` draws an empty figure


def test_best_entries_load_from_every_accepted_layout(tmp_path):
    run = RunConfig(toy_config(), TrainConfig(data="moons")).to_dict()
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"configs": [{"rank": 1, "trial_id": "t1", "run": run},
                                                {"rank": 2, "trial_id": "t2", "run": run}]}))
    assert load_best_entry(str(best), 2)["trial_id"] == "t2"
    with pytest.raises(UserError, match="--rank 3"):
        load_best_entry(str(best), 3)
    plain = tmp_path / "run.yaml"
    plain.write_text(yaml.safe_dump(run))
    assert load_best_entry(str(plain))["run"] == run
    bare = tmp_path / "model.yaml"
    bare.write_text(yaml.safe_dump(run["model"]))
    assert load_best_entry(str(bare))["run"] == {"model": run["model"], "train": {}}


def test_full_run_prepare_accepts_best_yaml(tmp_path):
    from sweeper.full_run import TrainOptions, prepare

    run = RunConfig(toy_config(), TrainConfig(data="moons", epochs=7)).to_dict()
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"configs": [{"rank": 1, "trial_id": "aaaa0001", "run": run}]}))
    storage = tmp_path / "full"
    loaded, name, folder = prepare(TrainOptions(config=str(best), epochs=1, workers=1, storage=str(storage)))
    assert loaded.model.to_dict() == run["model"] and loaded.train.epochs == 1 and loaded.train.data == "moons"
    assert name == "full-aaaa0001-rank1" and folder.uri == str(storage / name)
    assert not storage.exists()  # validation creates nothing


def test_a_best_entry_pairs_score_epoch_and_checkpoint_of_one_epoch():
    """The best epoch's checkpoint was not kept (here: only the last two are): the entry takes the best
    epoch that has one, its score and its checkpoint, and says so; never the best score with another
    epoch's checkpoint."""
    from sweeper.report import epoch_with_checkpoint

    records = [_record("bbbb0001", "TERMINATED", "search", "idensenet", [3.0, 3.4, 3.2], 2),
               _record("bbbb0002", "TERMINATED", "search", "idensenet", [3.6, 3.5, 3.1], 3)]
    df = table_from_records(records, EPOCHS, "test_nll").set_index("trial", drop=False)
    saved = {r["trial_id"]: r["checkpoints"] for r in records}
    lost = df.loc["bbbb0001"]
    assert lost["best_epoch"] == 1 and pd.isna(lost["best_checkpoint"])
    val, test, epoch, ckpt, note = epoch_with_checkpoint(next(df.loc[["bbbb0001"]].itertuples(index=False)),
                                                         saved["bbbb0001"])
    assert (val, test, epoch, ckpt) == (3.2, pytest.approx(3.2 + TEST_OFFSET), 3, "/ckpt/bbbb0001/3")
    assert "epoch 1 scored 3.0000" in note
    kept = epoch_with_checkpoint(next(df.loc[["bbbb0002"]].itertuples(index=False)), saved["bbbb0002"])
    assert kept == (3.1, pytest.approx(3.1 + TEST_OFFSET), 3, "/ckpt/bbbb0002/3", None)


def test_an_epoch_no_one_was_told_of_does_not_count():
    """ASHA stopped a trial on its epoch-1 report while its worker checkpointed epoch 2: the study
    recorded one epoch, and so does the table (without the study's record, both epochs count)."""
    rec = _record("dddd0001", "TERMINATED", "search", "idensenet", [3.5, 3.0], 2)
    told = table_from_records([rec], EPOCHS, "test_nll", {"dddd0001": ("stopped (ASHA)", 1)}).iloc[0]
    assert (told["status"], told["epochs_run"], told["best_val"]) == ("stopped (ASHA)", 1, 3.5)
    untold = table_from_records([rec], EPOCHS, "test_nll")
    assert (untold.iloc[0]["epochs_run"], untold.iloc[0]["best_val"]) == (2, 3.0)
    assert untold.attrs["curves"]["dddd0001"] == [(1, 3.5), (2, 3.0)]
