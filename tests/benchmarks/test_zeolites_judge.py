"""benchmarks/zeolites_judge.py: the oracle's own MD under the NN-MD judge (EMT copper)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from advsample import stability

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import zeolites_judge  # noqa: E402  (benchmarks/zeolites_judge.py)


def _job(tmp_path: Path, ceiling: float, steps: int = 40):
    atoms = bulk("Cu", cubic=True).repeat((2, 2, 2))
    test = SimpleNamespace(floor=0.5, bond_ceiling=ceiling, bond_tolerance=1.2)
    out = tmp_path / f"cu_{ceiling:g}.extxyz"
    return (atoms, {"type": "emt"}, 600.0, steps, 5, 1.0, 0.01, 0, test, str(out)), out


def test_a_run_within_the_ceiling_keeps_every_frame(tmp_path):
    job, out = _job(tmp_path, ceiling=1.5)
    frames = zeolites_judge.trajectory(job)
    assert len(frames) == 40 // 5 + 1 and out.exists()
    assert not out.with_suffix(".npz").exists()  # the MD state goes once the run is kept
    assert zeolites_judge.judge(frames, job[8])["verdict"] == "ok"


def test_a_run_stops_at_the_first_failed_frame(tmp_path):
    # Cu-Cu nearest neighbours (2.55 Å) vibrate by a few % at 600 K: a 1.01x ceiling fails
    job, out = _job(tmp_path, ceiling=1.01)
    frames = zeolites_judge.trajectory(job)
    assert 1 < len(frames) < 40 // 5 + 1
    row = zeolites_judge.judge(frames, job[8])
    assert row["verdict"] == "bond broken" and row["first_failure_frame"] == len(frames) - 1
    assert row["max_stretch_framework_guest"] is None  # copper: no guest


def test_a_killed_run_resumes_without_repeating_frames(tmp_path, monkeypatch):
    (tmp_path / "whole").mkdir()
    whole = zeolites_judge.trajectory(_job(tmp_path / "whole", ceiling=1.5)[0])
    job, out = _job(tmp_path, ceiling=1.5)
    judged = []

    def killed_after_4_frames(*args):
        judged.append(1)
        if len(judged) == 4:
            raise KeyboardInterrupt
        return real(*args)

    real = stability.judge_frames
    monkeypatch.setattr(stability, "judge_frames", killed_after_4_frames)
    with pytest.raises(KeyboardInterrupt):
        zeolites_judge.trajectory(job)
    assert len(ase.io.read(out.with_suffix(".part.extxyz"), ":")) == 4 and not out.exists()
    monkeypatch.setattr(stability, "judge_frames", real)
    resumed = zeolites_judge.trajectory(job)
    assert len(resumed) == len(whole)
    for a, b in zip(resumed, whole, strict=True):  # the same trajectory, frame for frame
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-10)


def test_framework_guest_bonds_find_the_bonds_between_host_and_guest():
    framework = bulk("Si", "diamond", a=5.43)  # Si-Si only: no guest
    assert not zeolites_judge.framework_guest_bonds(framework, 1.2)[0].any()
    nh3 = molecule("NH3")
    nh3.cell = [10.0, 10.0, 10.0]
    si = nh3.copy()[:1]
    si.symbols[0] = "Si"
    si.positions[0] = nh3.positions[0] + [0.0, 0.0, 2.0]  # N-Si 2.0 Å: a guest's N on a Si
    complex_ = nh3 + si
    across, bonds = zeolites_judge.framework_guest_bonds(complex_, 1.2)
    pairs = {tuple(sorted(complex_.get_chemical_symbols()[int(x)] for x in (i, j)))
             for i, j in zip(bonds.i[across], bonds.j[across])}
    assert pairs == {("N", "Si")}
    assert zeolites_judge.with_framework_guest_bonds([framework, complex_], 1.2) == [1]
