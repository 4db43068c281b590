"""One driver per experiment: a lease file in the experiment folder, renewed by a heartbeat.

``driver.lease`` holds the holder's id, host, process id, when it started and its last heartbeat
(seconds since the epoch). A driver takes the lease before it touches the study or Tune's state and
renews it every ``HEARTBEAT_S``; another driver (a second ``--resume``, or a new sweep of the same
name) refuses to start while the lease is held, with one line and exit code 2. A lease is free when
its file is absent, when its heartbeat is older than ``STALE_AFTER_S`` (the holder died or lost its
node), or at once when the holder ran on this host and its process is gone (SIGKILL, a crash).

Taking the lease writes it, waits ``CONFIRM_S`` and reads it back: of two drivers that found it free
at the same moment, the one whose write landed last holds it and the other refuses. The race that
remains: two drivers whose check and write are further apart than ``CONFIRM_S`` (a storage slower than
that per request) can both proceed; and a holder stalled for longer than ``STALE_AFTER_S`` (suspended,
partitioned) is taken over while it still lives. It notices at its next heartbeat, says so on stderr,
and stops renewing; its Tune run is not stopped, so stop it by hand. Neither can happen on storage
that answers within a second, with drivers that are not suspended.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from model.errors import UserError

from .storage import Location

LEASE_FILE = "driver.lease"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 90.0
CONFIRM_S = 1.0


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    host: str
    pid: int
    started: float
    heartbeat: float

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat

    def process_gone(self) -> bool:
        """The holder ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def is_free(self) -> bool:
        return self.age() > STALE_AFTER_S or self.process_gone()

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, last heartbeat {self.age():.0f} s ago"


def read_lease(exp: Location) -> LeaseRecord | None:
    """The experiment's lease, or None (absent, or unreadable: a torn write counts as none)."""
    try:
        data = json.loads(exp.join(LEASE_FILE).read_text())
        return LeaseRecord(**{k: data[k] for k in ("holder", "host", "pid", "started", "heartbeat")})
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DriverLease:
    """The lease this process holds on one experiment, renewed from the moment it is taken; a context
    manager that releases it."""

    def __init__(self, exp: Location, record: LeaseRecord) -> None:
        self.exp, self.record = exp, record
        self.lost = False
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a renewal in flight never lands after release deleted the file
        self._thread = threading.Thread(target=self._beat, name="idensenet-lease", daemon=True)

    def _write(self) -> None:
        self.exp.join(LEASE_FILE).write_text(json.dumps(asdict(self.record)))

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = read_lease(self.exp)
                if current is not None and current.holder != self.record.holder:
                    self.lost = True
                    print(f"idensenet: warning: another driver took over {self.exp.uri} ({current.describe()}); "
                          "this one no longer renews its lease: stop it", file=sys.stderr, flush=True)
                    return
                with self._lock:
                    if self._stop.is_set():
                        return
                    self.record = LeaseRecord(**{**asdict(self.record), "heartbeat": time.time()})
                    self._write()
            except OSError:  # storage briefly unreachable: try again at the next beat
                continue

    def start(self) -> "DriverLease":
        """Renew the lease every ``HEARTBEAT_S`` from now until :meth:`release`."""
        self._thread.start()
        return self

    def __enter__(self) -> "DriverLease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        with self._lock:
            self._stop.set()
            current = read_lease(self.exp)
            if current is not None and current.holder == self.record.holder:
                try:
                    self.exp.join(LEASE_FILE).fs.delete_file(self.exp.join(LEASE_FILE).path)
                except OSError:
                    pass


def refusal(exp: Location, held: LeaseRecord) -> UserError:
    return UserError(f"experiment {exp.uri} is being run by another driver ({held.describe()}); wait for it to end, "
                     f"or, if it is gone, --resume again once its heartbeat is over {STALE_AFTER_S:.0f} s old")


def acquire(exp: Location, wait_s: float = 0.0) -> DriverLease:
    """Take the experiment's lease (its folder must exist) or raise a one-line :class:`UserError`;
    ``wait_s``: how long to wait for a held lease to become free first (a requeued batch job whose
    predecessor is still dying)."""
    held = read_lease(exp)
    end = time.time() + wait_s
    if held is not None and not held.is_free() and wait_s > 0:
        print(f"waiting up to {wait_s:.0f} s for the driver lease of {exp.uri} ({held.describe()})", flush=True)
        while held is not None and not held.is_free() and time.time() < end:
            time.sleep(min(HEARTBEAT_S, max(0.1, end - time.time())))
            held = read_lease(exp)
    if held is not None and not held.is_free():
        raise refusal(exp, held)
    if held is not None:
        reason = "its process is gone" if held.process_gone() else f"no heartbeat for {held.age():.0f} s"
        print(f"taking over {exp.uri} from the driver that held it (pid {held.pid} on {held.host}: {reason})",
              flush=True)
    now = time.time()
    lease = DriverLease(exp, LeaseRecord(uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now))
    lease._write()
    time.sleep(CONFIRM_S)
    current = read_lease(exp)
    if current is None or current.holder != lease.record.holder:
        raise refusal(exp, current) if current is not None else UserError(
            f"experiment {exp.uri}: the driver lease could not be written back (storage not consistent?)")
    return lease.start()
