"""TimeLimitedOracle: the labels of the wrapped oracle, a failed label instead of a hang or a
dead child, in every executor, and no child outliving its parent."""

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from advsample.executors import make_executor
from advsample.oracles import TimeLimitedOracle, make_oracle

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # hanging_oracle, here and (via sys.path) in the children
    sys.path.insert(0, str(HERE))

MISBEHAVING = {"type": "ase", "calculator": "hanging_oracle:MisbehavingEMT"}
LIMIT_S = 5  # a healthy label (a 4-atom EMT cell, ~ms) fits with room on a loaded machine
# (a CI run beside two benchmark loops on 2 cores timed healthy labels out at 1 s)


def cu(seed=0, **info):
    """A rattled Cu cell; ``info`` (sleep=, exit=, print=) tells MisbehavingEMT what to do."""
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.05, seed=seed)
    atoms.info.update(info)
    return atoms


def alive(pid):
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.fixture(scope="module")
def misbehaving():
    """MisbehavingEMT with a limit of LIMIT_S; its child is shared by the tests of this
    module."""
    oracle = make_oracle({**MISBEHAVING, "timeout_s": LIMIT_S})
    yield oracle
    oracle.close()


def test_labels_equal_those_of_the_wrapped_oracle():
    emt = make_oracle({"type": "emt"})
    wrapped = TimeLimitedOracle(emt, timeout_s=30)
    try:
        pids = set()
        for seed in range(2):
            direct, result = emt.label(cu(seed)), wrapped.label(cu(seed))
            assert result.ok, result.message
            assert result.energy == pytest.approx(direct.energy, abs=1e-10)
            np.testing.assert_allclose(result.forces, direct.forces, rtol=0, atol=1e-10)
            pids.add(wrapped.child_pid)
        assert len(pids) == 1 and os.getpid() not in pids  # one child, reused
        assert wrapped.name == emt.name
        assert isinstance(wrapped.calculator(), EMT)
    finally:
        wrapped.close()


def test_a_hanging_call_times_out_and_the_next_call_gets_a_fresh_child(misbehaving):
    assert misbehaving.label(cu()).ok
    hung = misbehaving.child_pid
    start = time.perf_counter()
    result = misbehaving.label(cu(sleep=60))
    assert time.perf_counter() - start < 30  # loose: only proves it did not wait 60 s
    assert result.status == "failed" and result.message == f"timed out after {LIMIT_S} s"
    assert result.seconds >= LIMIT_S
    assert not alive(hung)
    after = misbehaving.label(cu(seed=1))
    assert after.ok, after.message
    assert misbehaving.child_pid != hung


def test_a_dying_child_gives_a_failed_label_and_the_next_call_works(misbehaving):
    result = misbehaving.label(cu(exit=3))
    assert result.status == "failed"
    assert result.message == "oracle child process died (exit code 3)"
    after = misbehaving.label(cu())
    assert after.ok, after.message


def test_output_of_the_oracle_does_not_corrupt_the_replies(misbehaving):
    result = misbehaving.label(cu(print="SCF iteration 1\n" * 1000))
    assert result.ok, result.message


def test_a_pickled_copy_labels_and_the_settings_rebuild_the_oracle(misbehaving):
    assert misbehaving.label(cu()).ok
    copy = pickle.loads(pickle.dumps(misbehaving))
    assert copy.child_pid is None
    result = copy.label(cu(seed=2))
    assert result.ok, result.message
    assert copy.child_pid == misbehaving.child_pid  # the idle child of this process, reused

    rebuilt = make_oracle(misbehaving.settings)
    assert isinstance(rebuilt, TimeLimitedOracle)
    assert rebuilt.settings == misbehaving.settings == {**MISBEHAVING, "kwargs": {},
                                                                 "timeout_s": LIMIT_S}
    assert rebuilt.inner.settings == misbehaving.inner.settings
    unlimited = make_oracle({"type": "emt", "timeout_s": None})  # no limit: not wrapped
    assert type(unlimited) is type(make_oracle({"type": "emt"}))


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), float("inf"), "5", True, [1]])
def test_bad_timeouts_raise_value_error(bad):
    with pytest.raises(ValueError, match="timeout_s"):
        make_oracle({"type": "emt", "timeout_s": bad})


def test_close_ends_the_idle_child(misbehaving):
    assert misbehaving.label(cu()).ok
    pid = misbehaving.child_pid
    misbehaving.close()
    assert not alive(pid)
    assert misbehaving.label(cu()).ok


@pytest.mark.parametrize("kind", ["inprocess", "processes"])
def test_executors_turn_a_hang_into_a_failed_label(kind, misbehaving):
    items = [(k, cu(k, sleep=60) if k == 2 else cu(k)) for k in range(4)]
    results = {}
    with make_executor(kind, workers=2) as executor:
        executor.label(misbehaving, items, results.__setitem__, progress=False)
    assert sorted(results) == [0, 1, 2, 3]
    assert results[2].message == f"timed out after {LIMIT_S} s"
    assert all(results[k].ok for k in (0, 1, 3)), {k: r.message for k, r in results.items()}


PARENT = """
from ase.build import bulk
from advsample.oracles import make_oracle

oracle = make_oracle({spec!r})
atoms = bulk("Cu", cubic=True)
assert oracle.label(atoms).ok
print(oracle.child_pid, flush=True)
atoms.info["sleep"] = 60
oracle.label(atoms)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_child_dies_with_its_parent():
    script = PARENT.format(spec={**MISBEHAVING, "timeout_s": 60})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        child = int(parent.stdout.readline())
        time.sleep(1)  # the child is now inside the 60 s call, not reading its stdin
        assert alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_the_limit_leaves_out_importing_the_oracles_libraries():
    """The child builds a calculator while it starts, so a library that takes longer to
    import than the limit (2 s against 1 s) does not time the first label out."""
    import slow_import_oracle

    oracle = make_oracle({"type": "ase", "calculator": "slow_import_oracle:SlowImportEMT",
                          "timeout_s": slow_import_oracle.IMPORT_SECONDS / 2})
    try:
        result = oracle.label(cu())
        assert result.ok, result.message
    finally:
        oracle.close()
