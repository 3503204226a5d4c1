"""Process-wide settings that make large CPU tensor work faster.

PyTorch allocates every CPU tensor with the C library's ``malloc``. With glibc's defaults,
blocks above the mmap threshold (128 KiB, adapting up to 32 MiB) are fresh ``mmap`` pages
that are returned to the kernel on free, so each large temporary of a forward/backward pass
(a [pairs, 3, features] message is tens of MB for a few thousand atoms) is page-faulted in
again on every step; for big cells this costs more than the arithmetic. Raising the mmap
threshold and disabling heap trimming keeps freed blocks in the heap for reuse.

The cost: the process keeps its peak heap size until it exits. The CLI and the benchmark
scripts call :func:`tune_allocator` once at start; library users opt in the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks below 1 GiB come from the heap


@functools.cache
def tune_allocator() -> bool:
    """Keep large freed blocks in the heap (glibc only). True if the settings took effect.

    Idempotent; a no-op returning False on other C libraries (macOS, musl) or where
    ``mallopt`` refuses the values.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, -1)
    )
