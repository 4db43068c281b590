"""One driver per experiment (sweeper/lease.py): a held lease refuses a second driver with one line,
a lease whose holder is gone (its process, on this host; its heartbeat, elsewhere) is taken over,
the heartbeat renews it, and release removes it. The refusal through the real command line is here
too; a real second driver against a live sweep on S3 is in test_fake_cluster.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.errors import UserError
from sweeper import lease as lease_mod
from sweeper.lease import LEASE_FILE, acquire, read_lease
from sweeper.storage import locate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(lease_mod, "CONFIRM_S", 0.05)


def _write(exp: Path, **fields) -> None:
    now = time.time()
    record = {"holder": "other", "host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now}
    (exp / LEASE_FILE).write_text(json.dumps({**record, **fields}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lease_refuses_a_second_driver_in_one_line(tmp_path):
    exp = locate(str(tmp_path))
    with acquire(exp) as held:
        assert read_lease(exp).holder == held.record.holder
        with pytest.raises(UserError) as err:
            acquire(exp)
        line = err.value.summary()
        assert "\n" not in line and "being run by another driver" in line and f"pid {os.getpid()}" in line
    assert not (tmp_path / LEASE_FILE).exists()  # released on exit


@pytest.mark.parametrize("case, fresh", [
    ({"pid": "dead"}, False),  # this host, process gone: free at once
    ({"host": "elsewhere", "heartbeat": time.time() - 10 * lease_mod.STALE_AFTER_S}, False),  # silent for long
    ({"host": "elsewhere"}, True),  # another host, beating: held
    ({}, True),  # this host, a live process (this one): held
])
def test_who_holds_the_lease(tmp_path, case, fresh, capsys):
    fields = {**case, **({"pid": _dead_pid()} if case.get("pid") == "dead" else {})}
    _write(tmp_path, **fields)
    exp = locate(str(tmp_path))
    if fresh:
        with pytest.raises(UserError):
            acquire(exp)
        assert read_lease(exp).holder == "other"
        return
    with acquire(exp) as mine:
        assert read_lease(exp).holder == mine.record.holder != "other"
    assert "taking over" in capsys.readouterr().out


def test_the_heartbeat_renews_and_notices_a_takeover(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.1)
    exp = locate(str(tmp_path))
    with acquire(exp) as mine:
        first = read_lease(exp).heartbeat
        time.sleep(0.5)
        assert read_lease(exp).heartbeat > first
        _write(tmp_path, holder="usurper")
        time.sleep(0.5)
        assert mine.lost and read_lease(exp).holder == "usurper"
    assert read_lease(exp).holder == "usurper"  # a lost lease is not deleted on release
    assert "another driver took over" in capsys.readouterr().err


def test_a_second_sweep_driver_is_refused_by_the_command_line(tmp_path):
    """``idensenet sweep --resume`` on an experiment whose lease is held: exit 2, one line, nothing
    written (before Ray starts)."""
    from sweeper.settings import SweepSettings

    exp = tmp_path / "held"
    exp.mkdir()
    SweepSettings(name="held", experiment=str(exp), space_name="x", space_yaml="", data="moons", is_toy=True,
                  epochs=1, trials=1).save(locate(str(exp)))
    _write(exp)  # held by this (live) test process
    before = sorted(p.name for p in exp.iterdir())
    proc = subprocess.run([str(Path(sys.executable).with_name("idensenet")), "sweep", "--resume", "--name", "held",
                           "--storage", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "is being run by another driver" in proc.stderr
    assert sorted(p.name for p in exp.iterdir()) == before
