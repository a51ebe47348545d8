"""Keep glibc's allocator from handing streamed buffers back to the kernel one by one.

A streamed upload or download passes through the process as a run of short-lived buffers of
64 KiB to 1 MiB: each socket read (256 KiB under uvloop), each parsed body part, each file
read. glibc's defaults serve a buffer above 128 KiB with its own ``mmap`` or grow the heap for
it, and give the memory back as soon as it is freed (``munmap``, or a heap trim once the free
top passes 128 KiB; the thresholds adapt, but only up to the size of one buffer). The next
buffer then takes fresh pages from the kernel, and every one of them is zeroed and faulted in
on first write. Moving 1 GiB through a bare uvicorn app cost 2.0 s of CPU this way, 1.6 s
of it in the kernel; with the thresholds below, 0.6 s (``bench/bench_registry.py``).

:func:`keep_freed_memory` raises two thresholds with ``mallopt``: buffers up to
``MMAP_THRESHOLD`` come from the heap, and the heap keeps up to ``TRIM_THRESHOLD`` of free
memory at its top for the next buffer. That is memory the process may hold on to after a
burst, not memory it uses: peak RSS (``VmHWM``) does not grow. Anywhere but glibc (musl,
macOS) it does nothing. ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set in the
environment win: an operator's choice is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: ``mallopt`` parameters, from glibc's ``malloc.h``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap, not a fresh mmap each.
MMAP_THRESHOLD = 4 << 20
#: Free memory the heap keeps at its top before it gives any back.
TRIM_THRESHOLD = 32 << 20

_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once. True when glibc took
    both values (or the environment already set them), False where there is no glibc."""
    if _done:
        return _done[0]
    _done.append(_apply())
    return _done[0]


def _apply() -> bool:
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: musl and macOS have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not ok:
        log.info("mallopt refused the mmap/trim thresholds; streamed bodies cost more CPU")
    return ok
