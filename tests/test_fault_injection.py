"""A whole run against a bad oracle and a bad machine: the oracle fails 20 % of its calls,
hangs on 5 % and returns NaN on 5 %, and the run is killed with SIGKILL at random moments
(initial data, training, sampling, labelling) and started again with the same command until
it finishes. It must finish with every structure stored exactly once with the right status,
and no oracle call repeated except one cut short by a kill."""

import hashlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from advsample.store import Store

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from slow_oracle import fault_of  # noqa: E402


def _config(tmp_path: Path, log: Path, generations: int) -> Path:
    path = tmp_path / "faulty.yaml"
    path.write_text(f"""
seed: 3
system: {{molecule: NH3}}
initial: {{method: normal_modes, frames: 10, temperature_K: 300}}
oracle: {{type: ase, calculator: 'slow_oracle:FaultyEMT', timeout_s: 2,
          reject_forces_above: null, reject_energy_above: null,
          kwargs: {{log: '{log}', clean_calls: 36}}}}
committee: {{size: 2, hyperparameters: {{features: 8, interactions: 1, cutoff: 4.0, n_rbf: 8}}}}
train: {{epochs: 20, batch_size: 8, patience: 10, bootstrap: false}}
sampler: {{kT: 0.2, steps: 10, restarts: 2, min_distance: 0.6}}
select: {{max_new: 8, gate_percentile: 0, min_separation: 0.001}}
loop: {{generations: {generations}, convergence: {{plateau_generations: null}}}}
""")
    return path


def _run_with_kills(tmp_path: Path, generations: int, kills: int, seed: int) -> dict:
    log = tmp_path / "calls.log"
    config, run_dir = _config(tmp_path, log, generations), tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "advsample.cli", "run", str(config), "--run-dir",
           str(run_dir), "--quiet"]
    rng, killed = random.Random(seed), 0
    stderr = tmp_path / "stderr.log"
    while True:  # until a start is not killed and finishes
        with open(stderr, "w") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        if killed < kills:
            try:
                proc.wait(timeout=rng.uniform(2.0, 9.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                continue
        assert proc.wait(timeout=600) == 0, stderr.read_text()[-3000:]
        break
    assert (run_dir / "stopped.json").exists()
    return {"log": log, "run_dir": run_dir, "killed": killed}


def _check(result: dict, generations: int, clean_calls: int = 36) -> None:
    # the oracle's own log: every geometry computed at most once, and a call started again
    # only when the earlier one was cut short by a kill
    starts, ends, last_start = Counter(), Counter(), {}
    for line in result["log"].read_text().splitlines():
        kind, key = line.split()
        if kind == "start":
            starts[key] += 1
            last_start[key] = sum(starts.values())
        else:
            ends[key] += 1
    assert max(ends.values()) == 1, "a finished oracle call was repeated"
    assert sum(n - 1 for n in starts.values()) <= result["killed"]

    rows = list(Store(result["run_dir"] / "labels.db")._db.select(sort="id"))
    assert {r.generation for r in rows} == set(range(generations + 1))
    assert not [r for r in rows if r.status == "pending"]
    stored = Counter(r.toatoms().positions.tobytes() for r in rows)
    assert max(stored.values()) == 1, "a structure was stored twice"
    expected = {"fail": ("failed", "simulated SCF failure"), "hang": ("failed", "timed out"),
                "nan": ("failed", "non-finite energy"), "none": ("ok", "")}
    for row in rows:
        positions = row.toatoms().positions
        key = hashlib.sha1(positions.tobytes()).hexdigest()
        faulty = last_start[key] > clean_calls  # FaultyEMT behaves for its first calls
        status, words = expected[fault_of(positions) if faulty else "none"]
        assert row.status == status and words in row.message, (row.status, row.message)
    statuses = Counter(r.status for r in rows)
    assert statuses["failed"] > 0 and statuses["ok"] > 0


def test_faulty_oracle_and_random_kills_short(tmp_path):
    result = _run_with_kills(tmp_path, generations=1, kills=2, seed=0)
    _check(result, generations=1)


@pytest.mark.slow
def test_faulty_oracle_and_random_kills_long(tmp_path):
    result = _run_with_kills(tmp_path, generations=3, kills=12, seed=1)
    assert result["killed"] >= 6  # the run may finish before the twelfth kill lands
    _check(result, generations=3)
