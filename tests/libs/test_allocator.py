"""linegate.allocator: buffers of a streamed body come from the heap and stay there.

Each case runs in a fresh interpreter, so glibc's thresholds start at their defaults (an earlier
test in this process may have moved the dynamic ones). ``mallinfo2`` tells where a block came
from: ``hblkhd`` counts bytes in blocks glibc mmapped on their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from linegate import allocator

_PROBE = r"""
import ctypes, json, sys

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    from linegate.allocator import keep_freed_memory
    assert keep_freed_memory()
before = libc.mallinfo2()
held = bytearray(2 << 20)  # one 2 MiB buffer, as a streamed chunk (or four) would be
during = libc.mallinfo2()
del held
after = libc.mallinfo2()
print(json.dumps({
    "mmapped": during.hblkhd - before.hblkhd,
    "heap_kept": after.arena - before.arena,
}))
"""


def _glibc_with_mallinfo2() -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        return hasattr(ctypes.CDLL(name), "mallinfo2")
    except OSError:
        return False


needs_glibc = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33")


def _probe(mode: str, env: dict[str, str] | None = None) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, int] = json.loads(out.stdout)
    return result


@needs_glibc
def test_glibc_defaults_mmap_a_streamed_buffer_and_give_it_back() -> None:
    """The control: what the tuning is for. With glibc's defaults a 2 MiB buffer gets an mmap
    of its own, and freeing it hands the pages back, so the next one is faulted in anew."""
    plain = _probe("plain")
    assert plain["mmapped"] >= 2 << 20
    assert plain["heap_kept"] < 2 << 20


@needs_glibc
def test_tuned_buffers_come_from_the_heap_and_stay_for_the_next() -> None:
    tuned = _probe("tuned")
    assert tuned["mmapped"] == 0
    assert tuned["heap_kept"] >= 2 << 20  # freed, but kept for the next buffer


@needs_glibc
def test_the_operators_environment_wins() -> None:
    """MALLOC_MMAP_THRESHOLD_ set by the operator: keep_freed_memory leaves glibc as told."""
    told = _probe("tuned", {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
    assert told["mmapped"] >= 2 << 20


def test_keep_freed_memory_is_applied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(allocator, "_done", [])
    monkeypatch.setattr(allocator, "_apply", lambda: calls.append(1) or True)
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True
    assert calls == [1]
