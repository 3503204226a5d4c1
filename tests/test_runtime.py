"""The allocator setting: takes effect on glibc, is idempotent, and changes no numbers."""

import platform

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
