"""Timing and memory helpers shared by the benchmark cases.

Peak memory on a CPU is the resident-set high-water mark of the process (``VmHWM`` in
``/proc/self/status``), reset through ``/proc/self/clear_refs`` after the model is built so the figure
is what the measured work adds on top of the model (tracemalloc does not see torch's allocator).
On a GPU it is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class PeakMemory:
    """``start()`` marks the baseline; ``peak_mb()`` is the peak above it since then (MiB)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base_mb = 0.0
        self.resettable = False

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.resettable = True
        except OSError:
            self.resettable = False
        rss = _status_kb("VmRSS")
        self.base_mb = (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base_mb
        hwm = _status_kb("VmHWM")
        if hwm is None:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return hwm / 1024 - self.base_mb

    def describe(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated above the allocated memory after building"
        if self.resettable or os.access("/proc/self/clear_refs", os.W_OK):
            return "VmHWM above VmRSS after building (high-water mark reset via /proc/self/clear_refs)"
        return "ru_maxrss / VmHWM above VmRSS after building (high-water mark could not be reset)"


def emit_json(result: Any, json_out: str | None) -> None:
    """Print ``result`` as indented JSON on stdout, and also write it to ``json_out`` when given."""
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if json_out:
        Path(json_out).write_text(text)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[int], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Wall seconds of ``fn(i)`` for i = warmup .. warmup + repeats - 1 (warm-up calls untimed)."""
    for i in range(warmup):
        fn(i)
    sync(device)
    times = []
    for i in range(warmup, warmup + repeats):
        t = time.perf_counter()
        fn(i)
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def summarize(times: list[float], items_per_call: int | None = None) -> dict[str, float | int]:
    """Median and spread (IQR, min, max) in seconds; calls/s and items/s from the median."""
    ts = sorted(times)
    med = statistics.median(ts)
    if len(ts) >= 4:
        q = statistics.quantiles(ts, n=4)
        q1, q3 = q[0], q[2]
    else:
        q1, q3 = ts[0], ts[-1]
    out: dict[str, float | int] = {
        "repeats": len(ts),
        "median_s": med,
        "iqr_s": q3 - q1,
        "min_s": ts[0],
        "max_s": ts[-1],
        "per_s": 1.0 / med if med > 0 else float("inf"),
    }
    if items_per_call:
        out["items_per_s"] = items_per_call / med if med > 0 else float("inf")
    return out
