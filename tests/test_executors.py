"""Executors: the same labels wherever the oracle runs, one callback per item, and errors in
workers turned into failed labels."""

import os

import numpy as np
import pytest
from ase.build import bulk, molecule

from advsample.executors import ProcessExecutor, make_executor
from advsample.oracles import XTBOracle, make_oracle
from advsample.oracles.ase_calc import ASECalculatorOracle


class RaisingOracle(ASECalculatorOracle):
    """Breaks the never-raise contract of ``label``."""

    def label(self, atoms):
        raise RuntimeError("oracle bug")


class DyingOracle(ASECalculatorOracle):
    """Kills the worker process it runs in."""

    def label(self, atoms):
        os._exit(3)


def cu_cells(n=4):
    """(row id, rattled Cu cell) items with ids 10, 11, ..."""
    items = []
    for k in range(n):
        atoms = bulk("Cu", cubic=True)
        atoms.rattle(0.05, seed=k)
        items.append((10 + k, atoms))
    return items


def nh3_items(n=3):
    items = []
    for k in range(n):
        atoms = molecule("NH3")
        atoms.rattle(0.05, seed=k)
        items.append((20 + k, atoms))
    return items


def collect(executor, oracle, items, progress=False):
    results = {}

    def on_result(row_id, result):
        assert row_id not in results, "on_result called twice for one item"
        results[row_id] = result

    executor.label(oracle, items, on_result, progress=progress)
    assert sorted(results) == sorted(i for i, _ in items)
    return results


def assert_same_labels(results, oracle, items):
    for row_id, atoms in items:
        direct = oracle.label(atoms)
        assert results[row_id].ok, results[row_id].message
        assert results[row_id].energy == pytest.approx(direct.energy, abs=1e-8)
        np.testing.assert_allclose(results[row_id].forces, direct.forces, atol=1e-7)


@pytest.fixture(scope="module")
def processes():
    with make_executor("processes", workers=2) as executor:
        yield executor


@pytest.mark.parametrize("kind", ["inprocess", "processes"])
def test_labels_match_direct_calls(kind, processes):
    executor = processes if kind == "processes" else make_executor("inprocess")
    for oracle, items in [(make_oracle({"type": "emt"}), cu_cells()), (XTBOracle(), nh3_items(2))]:
        assert_same_labels(collect(executor, oracle, items, progress=True), oracle, items)


def test_failed_labels_come_back_as_results(processes):
    results = collect(processes, XTBOracle(max_iterations=1), nh3_items(2))
    assert all(r.status == "failed" and "not converged" in r.message for r in results.values())


@pytest.mark.parametrize("kind", ["inprocess", "processes"])
def test_oracle_raising_in_a_worker_gives_failed_results(kind, processes):
    executor = processes if kind == "processes" else make_executor("inprocess")
    results = collect(executor, RaisingOracle("emt"), cu_cells(3))
    assert all(r.status == "failed" for r in results.values())
    assert all("RuntimeError: oracle bug" in r.message for r in results.values())


def test_dead_worker_gives_failed_results_and_a_fresh_pool():
    with ProcessExecutor(workers=1) as executor:
        results = collect(executor, DyingOracle("emt"), cu_cells(2))
        assert all("worker error" in r.message for r in results.values())
        oracle = make_oracle({"type": "emt"})
        assert_same_labels(collect(executor, oracle, cu_cells(2)), oracle, cu_cells(2))


def test_empty_items_need_no_workers():
    executor = make_executor("dask")
    executor.label(XTBOracle(), [], lambda *_: pytest.fail("no items, no callback"))
    assert executor._client is None  # nothing started


def test_dask_local_cluster_labels_like_direct_calls():
    oracle = make_oracle({"type": "emt"})
    items = cu_cells(4)
    with make_executor("dask", workers=2) as executor:
        assert_same_labels(collect(executor, oracle, items), oracle, items)


def test_unknown_executor_is_named():
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        make_executor("slurm")


ORPHAN_SCRIPT = '''
import os
import time

from advsample.executors import ProcessExecutor


def pid(_):
    time.sleep(0.3)
    return os.getpid()


def nap(_):
    time.sleep(120)


if __name__ == "__main__":
    executor = ProcessExecutor(2)
    print(" ".join(map(str, sorted(set(executor.map(pid, range(8)))))), flush=True)
    executor.map(nap, [0])  # one worker busy with a long task, the other idle
'''


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_end_with_a_killed_parent(tmp_path):
    """A run killed with SIGKILL takes its pool's workers with it, busy or idle."""
    import subprocess
    import sys
    import time

    script = tmp_path / "orphans.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(p) for p in workers)
        time.sleep(0.5)  # the long task has started
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 20
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_running(p) for p in workers)


def _die(_):
    os._exit(9)


def test_a_dying_worker_in_map_is_one_clear_error_and_the_pool_restarts():
    from advsample.cli import error_text
    from advsample.executors import WorkerDied

    with ProcessExecutor(workers=1) as executor:
        with pytest.raises(WorkerDied, match="worker process died while running _die") as info:
            executor.map(_die, [0])
        assert "run the same command again" in error_text(info.value)
        assert executor.map(abs, [-2, 3]) == [2, 3]  # a fresh pool
