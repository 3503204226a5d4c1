"""The allocator setting: takes effect on glibc, is idempotent, and changes no numbers."""

import ctypes
import ctypes.util
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from advsample.runtime import tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_takes_effect_on_glibc():
    assert tune_allocator() is True
    assert tune_allocator() is True  # cached, no second mallopt


def test_large_tensor_arithmetic_unchanged_after_tuning():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300_000, 8, generator=gen, dtype=torch.float64)  # 19 MB, above 128 KiB
    expected = float((a * a).sum())
    tune_allocator()
    for _ in range(3):  # blocks freed and reused from the heap
        b = a * a
        assert float(b.sum()) == expected
        del b


# ---------------------------------------------------------------- the setting has an effect
# glibc's mallinfo2() (2.33+) reports hblkhd, the bytes in mmap-ed blocks, uordblks, the
# bytes allocated on the heap, and arena, the heap size. A block of 48 MiB is above the
# largest threshold glibc's dynamic adjustment reaches (32 MiB on 64-bit), so without the
# setting it is always mmap-ed; with it, it comes from the heap.

BLOCK = 48 << 20

_MALLINFO = """
import ctypes, ctypes.util, json, sys

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]


def info():
    m = libc.mallinfo2()
    return {"arena": m.arena, "hblkhd": m.hblkhd, "uordblks": m.uordblks}


def measure(size):
    before = info()
    block = libc.malloc(size)
    assert block
    allocated = info()
    libc.free(block)
    return {"before": before, "allocated": allocated, "freed": info()}
"""

_SCRIPT = _MALLINFO + """
mode, size = sys.argv[1], int(sys.argv[2])
if mode == "tuned":
    from advsample.runtime import tune_allocator
    assert tune_allocator()
elif mode == "mmap_threshold_only":
    assert libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD as tune_allocator, no M_TRIM_THRESHOLD
print(json.dumps(measure(size)))
"""


def _has_mallinfo2() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    return name is not None and hasattr(ctypes.CDLL(name), "mallinfo2")


needs_mallinfo2 = pytest.mark.skipif(not _has_mallinfo2(),
                                     reason="needs glibc's mallinfo2 (glibc >= 2.33)")


def _in_subprocess(mode: str, size: int = BLOCK) -> dict:
    """mallinfo2 around malloc/free of ``size`` bytes in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}  # glibc defaults
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode, str(size)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _grew(m: dict, key: str) -> int:
    return m["allocated"][key] - m["before"][key]


@needs_mallinfo2
def test_untuned_large_block_is_mmapped():
    m = _in_subprocess("untuned")
    assert _grew(m, "hblkhd") >= BLOCK
    assert _grew(m, "uordblks") < BLOCK
    assert m["freed"]["hblkhd"] == m["before"]["hblkhd"]  # unmapped on free


@needs_mallinfo2
@pytest.mark.parametrize("allocate", ["malloc", "numpy", "torch"])
def test_tuned_large_block_comes_from_the_heap(allocate):
    namespace: dict = {}
    exec(_MALLINFO, namespace)  # the same mallinfo2 binding as the subprocesses
    info = namespace["info"]
    assert tune_allocator() is True
    before = info()
    if allocate == "malloc":
        block = namespace["libc"].malloc(BLOCK)
        allocated = info()
        namespace["libc"].free(block)
    elif allocate == "numpy":
        block = np.empty(BLOCK // 8)
        allocated = info()
        del block
    else:  # what the setting is for: a large CPU tensor
        block = torch.empty(BLOCK // 8, dtype=torch.float64)
        allocated = info()
        del block
    grew = {k: allocated[k] - before[k] for k in before}
    assert grew["hblkhd"] < BLOCK, "a large block was still served by mmap"
    assert grew["uordblks"] >= BLOCK


@needs_mallinfo2
def test_tuning_keeps_freed_blocks_in_the_heap():
    tuned = _in_subprocess("tuned")
    assert _grew(tuned, "hblkhd") < BLOCK and _grew(tuned, "uordblks") >= BLOCK
    assert tuned["freed"]["arena"] >= tuned["allocated"]["arena"]  # no trim on free
    # the threshold alone: the block comes from the heap but the freed top is trimmed away,
    # so the trim setting is what keeps the pages for the next step
    threshold_only = _in_subprocess("mmap_threshold_only")
    assert _grew(threshold_only, "uordblks") >= BLOCK
    assert threshold_only["allocated"]["arena"] - threshold_only["freed"]["arena"] >= BLOCK
