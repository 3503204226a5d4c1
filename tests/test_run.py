"""The resumable molecular loop: a killed run resumes without losing or repeating labels."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest
from helpers import labelled_nh3

from advsample.run import start
from advsample.store import Store

HERE = Path(__file__).parent


def _write_config(tmp_path, oracle_yaml, generations=2, max_new=6):
    init = tmp_path / "init.extxyz"
    ase.io.write(init, labelled_nh3(10), format="extxyz")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
seed: 0
system: {{molecule: NH3}}
initial: {{file: {init}}}
oracle: {oracle_yaml}
committee: {{size: 2, hyperparameters: {{features: 8, interactions: 1, cutoff: 4.0, n_rbf: 8}}}}
train: {{epochs: 15, batch_size: 8, patience: 10}}
sampler: {{kT: 0.1, steps: 8, restarts: 3, min_distance: 0.5}}
select: {{max_new: {max_new}, gate_percentile: 0, min_separation: 0.001}}
loop: {{generations: {generations}}}
""")
    return cfg


def _key(atoms):
    return hashlib.sha1(atoms.positions.round(8).tobytes()).hexdigest()


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{HERE}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_sigkill_during_labelling_then_resume(tmp_path):
    log = tmp_path / "calls.log"
    cfg = _write_config(tmp_path, "{type: ase, calculator: 'slow_oracle:SlowLoggingEMT', "
                                  f"kwargs: {{log: '{log}', delay: 0.4}}}}")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "advsample.cli", "run", str(cfg), "--run-dir", str(run_dir),
           "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = run_dir / "labels.db"
    deadline = time.time() + 240
    done_before = []
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                rows = Store(db).rows(generation=1)
            except sqlite3.OperationalError:  # the run is still creating the database
                continue
            done_before = [r for r in rows if r["status"] == "ok"]
            if len(done_before) >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(db)
    before = {r["id"]: r["energy"] for r in store.rows() if r["status"] == "ok"}
    finished = {_key(a) for a in store.training_atoms()} - {_key(a) for a in ase.io.read(
        tmp_path / "init.extxyz", ":")}
    assert store.count(status="pending") > 0  # killed in the middle of labelling

    subprocess.run(cmd, env=_env(), check=True, capture_output=True)
    after = {r["id"]: r for r in Store(db).rows()}
    for row_id, energy in before.items():  # nothing finished was lost or changed
        assert after[row_id]["status"] == "ok" and after[row_id]["energy"] == energy
    assert not [r for r in after.values() if r["status"] == "pending"]
    calls = log.read_text().split()
    assert len(finished) >= 2
    for key in finished:  # labels stored before the kill were never computed again
        assert calls.count(key) == 1, "a finished oracle call was repeated"
    assert len(calls) - len(set(calls)) <= 1  # at most the call in flight at the kill
    labelled = [r for r in after.values() if r["generation"] >= 1]
    assert len(set(calls)) == len(labelled) == 12
    assert json.loads((run_dir / "stopped.json").read_text())["generation"] == 2
    assert (run_dir / "generations" / "gen_002" / "committee.pt").exists()


def test_oracle_failures_are_recorded_and_the_run_goes_on(tmp_path):
    cfg = _write_config(tmp_path, "{type: ase, calculator: 'slow_oracle:FlakyEMT'}",
                        generations=1, max_new=10)
    import importlib

    sys.path.insert(0, str(HERE))
    importlib.import_module("slow_oracle")
    al = start(cfg, tmp_path / "run", progress=False)
    state = al.run()
    rows = al.store.rows(generation=1)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("simulated" in r["message"] for r in failed)
    assert state["failed"] == len(failed)
    assert len(al.store.training_atoms()) == 10 + len(rows) - len(failed)
    assert (tmp_path / "run" / "generations" / "gen_001" / "committee.pt").exists()


def test_extending_a_finished_run_keeps_its_work_and_runs_on(tmp_path):
    from advsample.config import ConfigError, load_config
    from advsample.run import run

    cfg = _write_config(tmp_path, "{type: emt}", generations=1, max_new=4)
    run_dir = tmp_path / "run"
    first = run(cfg, run_dir, progress=False)
    assert first["generation"] == 1
    before = {r["id"]: (r["energy"], r["status"]) for r in Store(run_dir / "labels.db").rows()}
    checkpoint = run_dir / "generations" / "gen_001" / "committee.pt"
    stamp = checkpoint.stat().st_mtime_ns
    with pytest.raises(ConfigError, match="config.yaml: loop.generations: 0 is below"):
        run(run_dir, progress=False, generations=0)

    state = run(run_dir, progress=False, generations=2)
    assert state["generation"] == 2 and "reached 2 generations" in state["reason"]
    assert load_config(run_dir / "config.yaml").loop.generations == 2
    assert "loop.generations 1 -> 2" in (run_dir / "config.yaml").read_text()
    assert load_config(run_dir / "config.original.yaml").loop.generations == 1
    after = {r["id"]: (r["energy"], r["status"]) for r in Store(run_dir / "labels.db").rows()}
    assert {k: after[k] for k in before} == before  # nothing relabelled or lost
    assert Store(run_dir / "labels.db").count(generation=2) > 0
    assert checkpoint.stat().st_mtime_ns == stamp  # generation 1 not retrained
    assert (run_dir / "generations" / "gen_002" / "committee.pt").exists()


def test_raising_limits_needs_an_existing_run(tmp_path):
    from advsample.config import ConfigError
    from advsample.run import run

    cfg = _write_config(tmp_path, "{type: emt}")
    with pytest.raises(ConfigError, match="raise the limits of an existing run"):
        run(cfg, tmp_path / "new", progress=False, generations=3)
    assert not (tmp_path / "new").exists()


def test_parallel_switches_without_workers_are_named_in_a_warning(caplog):
    import logging

    from advsample.config import parse_config
    from advsample.run import build, idle_parallel_switches

    base = {"system": {"dim": 2, "box": [-1.2, 1.2]},
            "initial": {"method": "uniform_box", "frames": 20, "energy_max": -2.0},
            "oracle": {"type": "analytic", "surface": "double_well_2d"},
            "committee": {"model": "mlp", "size": 2}, "train": {"parallel": True},
            "sampler": {"parallel": True}}
    config = parse_config(base)
    assert idle_parallel_switches(config) == ["train.parallel", "sampler.parallel"]
    with caplog.at_level(logging.WARNING, logger="advsample"):
        build(config, None, progress=False)
    assert "train.parallel, sampler.parallel: executor.kind is inprocess" in caplog.text
    workers = parse_config({**base, "executor": {"kind": "processes", "workers": 2}})
    assert idle_parallel_switches(workers) == []
