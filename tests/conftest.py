"""Shared fixtures: seeded RNG per test, each test in its own temporary directory."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_tmpdir(tmp_path, monkeypatch):
    torch.manual_seed(0)
    np.random.seed(0)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=[
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device")),
])
def device(request) -> torch.device:
    """Each device a test should run on: the CPU, and the GPU when there is one."""
    return torch.device(request.param)
