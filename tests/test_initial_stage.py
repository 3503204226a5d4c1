"""Generation 0 survives a kill: relaxation, oracle MD and normal modes resume without sending
the oracle a geometry it already computed, and a run that never trained generation 0 takes
the configuration given now."""

import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from helpers import labelled_nh3

from advsample.config import parse_config
from advsample.initial_data import oracle_md
from advsample.initial_stage import make_initial_data
from advsample.oracles import make_oracle
from advsample.run import start
from advsample.store import Store

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # slow_oracle, imported by the "ase" oracle


def _config(log: Path, method: str, fail_after: int | None = None):
    return parse_config({
        "seed": 2, "system": {"molecule": "NH3"},
        "initial": {"method": method, "frames": 6, "interval": 5, "temperature_K": 300},
        "oracle": {"type": "ase", "calculator": "slow_oracle:LoggingEMT",
                   "kwargs": {"log": str(log), "fail_after": fail_after}}})


def _make(run_dir: Path, log: Path, method: str, fail_after: int | None = None) -> Store:
    config = _config(log, method, fail_after)
    run_dir.mkdir(exist_ok=True)
    store = Store(run_dir / "labels.db")
    make_initial_data(config, store, make_oracle(config.oracle.spec()), run_dir)
    return store


def _positions(store: Store) -> np.ndarray:
    return np.array([row.toatoms().positions for row in store._db.select(sort="id")])


@pytest.mark.parametrize("method, fail_after", [
    ("md", 3),             # during the relaxation
    ("md", -5),            # during the MD (5 calls before its end)
    ("normal_modes", 3),   # during the relaxation
    ("normal_modes", -5),  # during the finite-difference Hessian
])
def test_killed_initial_data_resumes_without_repeating_an_oracle_call(tmp_path, method,
                                                                      fail_after):
    reference = _make(tmp_path / "reference", tmp_path / "reference.log", method)
    reference_calls = (tmp_path / "reference.log").read_text().split()
    assert len(reference_calls) == len(set(reference_calls))
    fail_after %= len(reference_calls)
    run_dir, log = tmp_path / "run", tmp_path / "calls.log"
    with pytest.raises(KeyboardInterrupt):
        _make(run_dir, log, method, fail_after)
    assert len(log.read_text().split()) == fail_after
    assert not (run_dir / "initial" / "complete.json").exists()
    store = _make(run_dir, log, method)
    calls = log.read_text().split()
    assert len(calls) == len(set(calls)), "a geometry was sent to the oracle twice"
    assert len(calls) == len(reference_calls)
    assert store.count(generation=0) == reference.count(generation=0) == 6
    np.testing.assert_allclose(_positions(store), _positions(reference), atol=1e-9)
    statuses = {r["status"] for r in store.rows()}
    assert statuses == ({"ok"} if method == "md" else {"pending"})  # the loop labels these
    _make(run_dir, log, method)  # complete: nothing more
    assert log.read_text().split() == calls


def test_oracle_md_continues_from_its_checkpoint_exactly(tmp_path):
    oracle = make_oracle({"type": "emt"})
    copper = bulk("Cu", cubic=True)
    uninterrupted = oracle_md(copper, oracle, 300, steps=40, interval=10, seed=1)

    class Stop(Exception):
        pass

    kept = {}

    def stop_at_two(k, frame):
        kept.setdefault(k, frame)
        if k == 2:
            raise Stop

    checkpoint = tmp_path / "md.npz"
    with pytest.raises(Stop):
        oracle_md(copper, oracle, 300, steps=40, interval=10, seed=1, checkpoint=checkpoint,
                  on_frame=stop_at_two)
    oracle_md(copper, oracle, 300, steps=40, interval=10, seed=1, checkpoint=checkpoint,
              on_frame=lambda k, frame: kept.setdefault(k, frame))
    assert sorted(kept) == [0, 1, 2, 3, 4]
    for k, frame in enumerate(uninterrupted):
        np.testing.assert_allclose(kept[k].positions, frame.positions, atol=1e-12)
        assert kept[k].get_potential_energy() == pytest.approx(frame.get_potential_energy())


def _run_yaml(tmp_path: Path, initial_file: Path, epochs: int) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"""
seed: 0
system: {{molecule: NH3}}
initial: {{file: {initial_file}}}
oracle: {{type: emt}}
committee: {{size: 2, hyperparameters: {{features: 8, interactions: 1, cutoff: 4.0, n_rbf: 8}}}}
train: {{epochs: {epochs}, batch_size: 8, patience: 10}}
sampler: {{steps: 4, restarts: 1}}
select: {{max_new: 2, gate_percentile: 0}}
loop: {{generations: 1}}
""")
    return path


def test_a_run_that_failed_before_generation_0_takes_the_fixed_config(tmp_path):
    good = tmp_path / "good.extxyz"
    ase.io.write(good, labelled_nh3(8), format="extxyz")
    bad = tmp_path / "bad.extxyz"
    bad.write_text("this is not extxyz\n")
    run_dir = tmp_path / "run"
    with pytest.raises(Exception, match="bad.extxyz"):
        start(_run_yaml(tmp_path, bad, epochs=5), run_dir, progress=False).run()
    fixed = _run_yaml(tmp_path, good, epochs=5)
    al = start(fixed, run_dir, progress=False)
    assert (run_dir / "config.yaml").read_text() == fixed.read_text()
    assert al.run()["generation"] == 1
    assert list(run_dir.glob("superseded-*/config.yaml"))  # the earlier attempt, kept aside
    # once generation 0 is trained, the stored configuration wins
    changed = _run_yaml(tmp_path, good, epochs=7)
    start(changed, run_dir, progress=False)
    assert "epochs: 5" in (run_dir / "config.yaml").read_text()
