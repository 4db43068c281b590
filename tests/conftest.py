"""Shared fixtures: one local Ray instance for the whole session, started only when a test asks.

The instance over-commits logical CPUs (num_cpus=6 on a 2-core machine) so that 2 concurrent trials
of (driver + worker) always fit; the dashboard stays on because its State API is what frees the
workers of trials ASHA stops (see ``sweeper/placement.py``), and every Ray process is pointed at this
instance's dashboard (``start_local_ray``) because other Ray instances may run on the same machine;
token auth is off (loopback only).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

RAY_TEST_CPUS = 6


@pytest.fixture(scope="session")
def ray_session():
    """Address of a local Ray instance shared by every Ray test of the session (``address="local"``:
    never join another cluster that happens to run on this machine)."""
    import ray

    from sweeper.placement import start_local_ray

    started = False
    if not ray.is_initialized():
        os.environ.pop("RAY_ADDRESS", None)
        start_local_ray(RAY_TEST_CPUS, 0, 200 * 1024**2, log_to_driver=False)
        started = True
    address = ray.get_runtime_context().gcs_address
    yield address
    if started:
        ray.shutdown()
