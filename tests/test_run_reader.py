"""Reading a Train run that is being written (sweeper/run_reader.py), on a local folder and on a real
S3-protocol server (moto, loopback): Ray Train's checkpoint-manager snapshot torn, the newest
checkpoint folder deleted (Ray evicts after writing its snapshot), a folder half uploaded, a
``meta.json`` torn. The reader returns the newest consistent checkpoint and never raises."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from sweeper import checkpoint as ck
from sweeper.run_reader import checkpoint_of_epoch, checkpointed_history, latest_checkpoint, saved_checkpoints
from sweeper.storage import locate

from cluster_utils import s3_server


def _write_run(root: Path, epochs: int) -> list[dict]:
    """A Train run as this project writes it: one checkpoint folder per epoch, history growing."""
    import torch

    history = []
    for e in range(1, epochs + 1):
        history.append({"epoch": e, "test_score": 3.0 - 0.1 * e})
        d = root / f"checkpoint_2026-12-05_00-00-0{e}.000000"
        ck.save_checkpoint(d, 0, {"epoch": e, "model": {"w": torch.full((32, 32), float(e))}}, ck.capture_rng(),
                           {"epoch": e, "history": list(history)})
    (root / "checkpoint_manager_snapshot.json").write_text('{"checkpoint_results": [{"path": "x"')  # torn
    return history


def _upload(local: Path, uri: str) -> None:
    loc = locate(uri)
    pafs.copy_files(str(local), loc.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=loc.fs)


def _damage(run, names: list[str]) -> None:
    """Delete the newest folder, tear the second newest's meta.json, half-upload the third's state.pt."""
    fs = run.fs
    fs.delete_dir(run.join(names[-1]).path)
    with fs.open_output_stream(run.join(names[-2], ck.META_FILE).path) as f:
        f.write(b'{"epoch": 4, "hist')
    state = run.join(names[-3], ck.STATE_FILE)
    data = state.read_bytes()
    with fs.open_output_stream(state.path) as f:
        f.write(data[: len(data) // 2])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_damaged_live_run_reads_as_its_newest_consistent_checkpoint(tmp_path, where):
    local = tmp_path / "train-abc"
    history = _write_run(local, 5)
    names = sorted(p.name for p in local.iterdir() if p.is_dir())
    if where == "local":
        run = locate(str(local))
        _damage(run, names)
        run_reader_checks(run, history)
        return
    with s3_server() as s3:
        uri = f"s3://{s3['bucket']}/exp/train_runs/train-abc"
        _upload(local, uri)
        run = locate(uri)
        _damage(run, names)
        run_reader_checks(run, history)


def run_reader_checks(run, history) -> None:
    saved = saved_checkpoints(run)
    assert [c.epoch for c in saved] == [1, 2]  # 5 deleted, 4 torn meta, 3 half a state.pt
    assert checkpointed_history(run) == history[:2]
    assert latest_checkpoint(run).report == history[1]
    assert checkpoint_of_epoch(saved, 3) is None and checkpoint_of_epoch(saved, 1).epoch == 1
    with tempfile.TemporaryDirectory() as d:  # the folder it returns loads
        pafs.copy_files(saved[-1].location.path, d, source_filesystem=run.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        assert ck.load_state(d)["epoch"] == 2


def test_missing_or_unlisted_runs_read_as_empty(tmp_path):
    assert saved_checkpoints(locate(str(tmp_path / "nothing-here"))) == []
    assert checkpointed_history(locate(str(tmp_path / "nothing-here"))) == []
    run = tmp_path / "train-x"
    _write_run(run, 2)
    for p in run.glob("checkpoint_2*"):
        (p / ck.META_FILE).unlink()  # a folder whose meta.json has not arrived yet
    assert saved_checkpoints(locate(str(run))) == []


def test_folders_written_before_sizes_were_listed_still_count(tmp_path):
    """Checkpoints of earlier versions list no file sizes: complete when meta.json parses and state.pt is there."""
    run = tmp_path / "train-old"
    _write_run(run, 2)
    for p in run.glob("checkpoint_2*"):
        meta = json.loads((p / ck.META_FILE).read_text())
        del meta["files"]
        (p / ck.META_FILE).write_text(json.dumps(meta))
    newest = sorted(run.glob("checkpoint_2*"))[-1]
    (newest / ck.STATE_FILE).unlink()
    assert [c.epoch for c in saved_checkpoints(locate(str(run)))] == [1]
    shutil.rmtree(run)


def test_a_checkpoint_of_a_newer_format_is_refused_in_one_line(tmp_path):
    import torch

    from model.errors import UserError

    d = tmp_path / "ck"
    ck.save_checkpoint(d, 0, {"epoch": 1}, ck.capture_rng(), {"epoch": 1})
    assert ck.load_state(d)["format"] == ck.CHECKPOINT_FORMAT
    torch.save({"format": ck.CHECKPOINT_FORMAT + 1, "epoch": 1}, d / ck.STATE_FILE)
    with pytest.raises(UserError, match="newer than"):
        ck.load_state(d)
