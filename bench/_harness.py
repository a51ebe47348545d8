"""Shared printing and timing helpers for bench/ modules."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

SCALE = float(os.environ.get("LINEGATE_BENCH_SCALE", "1"))


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) and its direct children
    (uvicorn's workers), from /proc: steadier than wall times on a shared machine."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(c) for c in children.read_text().split()]
    ticks = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rate(fn: Callable[[], object], n: int) -> float:
    """Calls per second of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def report(
    bench: str,
    label: str,
    value: float,
    unit: str,
    ref_label: str,
    ref_value: float,
    target: str = "",
) -> None:
    """Print a figure beside its reference, with the ratio (ours / reference)."""
    ratio = value / ref_value if ref_value else float("nan")
    print(f"[{bench}] {label:<52} {value:>12,.0f} {unit}")
    suffix = f"   target {target}" if target else ""
    pad = " " * (len(bench) + 3)
    print(f"{pad}reference: {ref_label:<41} {ref_value:>12,.0f} {unit}   ratio {ratio:.2f}{suffix}")


@contextlib.contextmanager
def profiled(pid: int, name: str) -> Iterator[None]:
    """``with profiled(pid, "name"):`` samples process ``pid`` (and its children) with py-spy
    while the block runs, when ``LINEGATE_BENCH_PROFILE`` names a directory and py-spy is
    installed: collapsed stacks in ``name.folded`` there, for a flame graph or a self-time
    table (``LINEGATE_BENCH_PROFILE_GIL=1``: only the thread holding the GIL is sampled). Off
    by default; sampling costs the profiled process some CPU, so the figures of a profiled run
    are not the ones to report."""
    where = os.environ.get("LINEGATE_BENCH_PROFILE")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not where:
        yield
        return
    if not Path(spy).exists():
        print(f"note: LINEGATE_BENCH_PROFILE is set, py-spy is not installed: {name} not profiled")
        yield
        return
    Path(where).mkdir(parents=True, exist_ok=True)
    out, k = Path(where) / f"{name}.folded", 1
    while out.exists():  # the same load profiled again (another database): a file of its own
        k += 1
        out = Path(where) / f"{name}-{k}.folded"
    cmd = [spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--subprocesses"]
    if os.environ.get("LINEGATE_BENCH_PROFILE_GIL") == "1":
        cmd.append("--gil")  # only the thread holding the GIL: what a GIL-bound server spends
    cmd += ["--format", "raw", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        proc.wait(30)
