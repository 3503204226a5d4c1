"""A user-style run on a molecule that is not NH3: H2O2 with GFN2-xTB and every kind of
molecular evaluator, two generations; each metric lands in metrics.json and the report."""

import json

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from advsample.oracles import make_oracle
from advsample.run import start

HOOH = [2, 0, 1, 3]  # H-O-O-H dihedral of ase's H2O2 (O, O, H, H)


def _labelled(frames, oracle):
    out = []
    for a in frames:
        result = oracle.label(a)
        assert result.ok
        a = a.copy()
        from ase.calculators.singlepoint import SinglePointCalculator

        a.calc = SinglePointCalculator(a, energy=result.energy, forces=result.forces)
        out.append(a)
    return out


@pytest.fixture
def h2o2_files(tmp_path):
    oracle = make_oracle({"type": "xtb", "method": "GFN2-xTB"})
    rng = np.random.default_rng(3)
    base = molecule("H2O2")
    test = []
    for _ in range(12):
        a = base.copy()
        a.positions += rng.normal(0, 0.06, a.positions.shape)
        test.append(a)
    ase.io.write(tmp_path / "test.extxyz", _labelled(test, oracle), format="extxyz")
    path = []
    for angle in np.linspace(180, 0, 7):  # torsion from trans to cis
        a = base.copy()
        a.set_dihedral(*HOOH, angle, indices=[3])
        a.info["coordinate"] = float(angle)
        path.append(a)
    path = _labelled(path, oracle)
    for a, angle in zip(path, np.linspace(180, 0, 7)):
        a.info["coordinate"] = float(angle)
    ase.io.write(tmp_path / "torsion.extxyz", path, format="extxyz")
    return tmp_path


def test_h2o2_run_with_four_evaluators(h2o2_files, tmp_path):
    cfg = tmp_path / "h2o2.yaml"
    cfg.write_text(f"""
seed: 2
system: {{molecule: H2O2}}
initial: {{method: md, temperature_K: 300, frames: 12, interval: 10}}
oracle: {{type: xtb}}
committee: {{size: 3, hyperparameters: {{features: 8, interactions: 1, cutoff: 4.0, n_rbf: 8}}}}
train: {{epochs: 20, batch_size: 8, patience: 10}}
sampler: {{kT: 0.1, steps: 15, restarts: 2}}
select: {{max_new: 4, gate_percentile: 0, min_separation: 0.001}}
loop: {{generations: 2}}
evaluate:
  - {{type: test_set, file: {h2o2_files / 'test.extxyz'}}}
  - {{type: stability, runs: 3, steps: 40, temperature_K: 300}}
  - {{type: path, file: {h2o2_files / 'torsion.extxyz'}, name: torsion}}
  - {{type: coverage, cvs: [{HOOH}], bins: 12}}
""")
    from advsample.report import write_report

    al = start(cfg, tmp_path / "run", progress=False)
    state = al.run()
    assert state["generation"] == 2
    for g in range(3):
        m = json.loads((tmp_path / "run" / "generations" / f"gen_{g:03d}" /
                        "metrics.json").read_text())
        assert set(m["test_set"]["per_element"]) == {"H", "O"}
        assert m["test_set"]["structures"] == 12 and m["test_set"]["forces_rmse"] > 0
        assert -1 <= m["test_set"]["sigma_error_spearman"] <= 1
        assert 0 <= m["stability"]["fraction_stable"] <= 1 and m["stability"]["runs"] == 3
        # one start (the first training structure): its fraction is the whole test's
        assert m["stability"]["fraction_stable_per_start"] == [m["stability"]["fraction_stable"]]
        assert len(m["torsion"]["energy"]) == 7 and m["torsion"]["coordinate"][3] == 90.0
        assert m["torsion"]["barrier_reference"] > 0
        assert 1 <= m["coverage"]["occupied"] <= 12
        assert len(m["coverage"]["values"]) == m["labels"]
    report = write_report(tmp_path / "run").read_text()
    for name in ("test_set", "stability", "torsion", "coverage"):
        assert f"## {name}" in report
        assert (tmp_path / "run" / "report" / f"evaluator_{name}.png").stat().st_size > 1000
    assert "torsion: barrier error (eV)" in report
    assert (tmp_path / "run" / "report" / "convergence.png").exists()
    # each committee calibrated on the labels it proposed; the next one checks the transfer
    gens = tmp_path / "run" / "generations"
    first, second = (json.loads((gens / f"gen_{g:03d}" / "metrics.json").read_text())
                     ["calibration"] for g in (0, 1))
    assert first["n"] == 4 * 4 and first["scale"] > 0 and "transfer_coverage" not in first
    assert 0 <= second["transfer_coverage"] <= 1 and -1 <= second["spearman"] <= 1
    assert "## calibration" in report
    assert (tmp_path / "run" / "report" / "evaluator_calibration.png").stat().st_size > 1000
    carried = json.loads((gens / "gen_002" / "calibration.json").read_text())
    assert carried["meta"] == {"committee_generation": 1, "labels_generation": 2,
                               "carried_over_to": 2}
