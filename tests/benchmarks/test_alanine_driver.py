"""benchmarks/alanine.py: basins re-judged from a loop's labels.db (no loop is run)."""

import sys
from pathlib import Path

import pytest
from ase.calculators.singlepoint import SinglePointCalculator

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import alanine  # noqa: E402  (benchmarks/alanine.py)

from advsample.evaluators.conformers import load_grid  # noqa: E402
from advsample.store import Store  # noqa: E402

GRID = REPO / "examples" / "data" / "alanine_phi_psi_grid.extxyz"


def _point(grid, phi, psi, extra_eV=0.0):
    """The relaxed grid structure at (phi, psi) with its oracle labels, energy + extra_eV."""
    src = next(g for g in grid if (g.info["phi"], g.info["psi"]) == (phi, psi))
    a = src.copy()
    a.calc = SinglePointCalculator(a, energy=src.get_potential_energy() + extra_eV,
                                   forces=src.get_forces())
    return a


def test_judge_basins_counts_thermal_labels_per_generation(tmp_path):
    if not GRID.exists():
        pytest.skip("alanine dipeptide data not built (benchmarks/alanine_reference.py)")
    grid = load_grid(GRID)
    run = tmp_path / "attack" / "repeat_0"
    run.mkdir(parents=True)
    store = Store(run / "labels.db")
    store.add_labelled([_point(grid, -80.0, 80.0)], generation=0)  # C7eq
    store.add_labelled([_point(grid, 80.0, -60.0, extra_eV=20.0),  # C7ax's angles, torn
                        _point(grid, -140.0, 160.0, extra_eV=0.5)], generation=1)  # C5, warm
    config = {"evaluate": [{"type": "conformers", "file": str(GRID), "phi": [1, 3, 4, 6],
                            "psi": [3, 4, 6, 8]}]}
    history = [{"generation": 0, "n_train": 1, "conformers": {"basin_counts": [9, 9, 9, 9]}},
               {"generation": 1, "n_train": 3, "conformers": {}}]
    alanine.judge_basins({"attack": [history]}, {"attack": [run]}, config)
    # the committed scan's basins, lowest first: C7eq, C7ax, C5, (-160°, -60°)
    assert history[0]["conformers"]["basin_counts"] == [1, 0, 0, 0]
    assert history[1]["conformers"]["basin_counts"] == [1, 0, 1, 0]
    assert history[1]["conformers"]["fraction_basins_visited"] == 0.5
    assert 1.3 < history[1]["conformers"]["basin_energy_eV"] < 1.4
    history[1]["n_train"] = 4  # labels.db and the history disagree: said, not guessed
    with pytest.raises(ValueError, match="attack/repeat_0 generation 1"):
        alanine.judge_basins({"attack": [history]}, {"attack": [run]}, config)


def test_basin_uncertainty_reports_the_committee_spread_at_the_basins(tmp_path):
    if not GRID.exists():
        pytest.skip("alanine dipeptide data not built (benchmarks/alanine_reference.py)")
    import numpy as np

    from advsample.committee import Committee
    from advsample.structures import Batch

    grid = load_grid(GRID)
    run = tmp_path / "attack" / "repeat_0"
    committees = [Committee.build("painn", 2, seed=g, features=8, interactions=1, cutoff=4.0,
                                  n_rbf=6) for g in (0, 1)]
    for g, committee in enumerate(committees):
        (run / "generations" / f"gen_{g:03d}").mkdir(parents=True)
        committee.save(run / "generations" / f"gen_{g:03d}" / "committee.pt")
    config = {"evaluate": [{"type": "conformers", "file": str(GRID), "phi": [1, 3, 4, 6],
                            "psi": [3, 4, 6, 8]}]}
    lines = alanine.basin_uncertainty({"attack": [[{"generation": 0}, {"generation": 1}]]},
                                      config, tmp_path)
    rows = [line for line in lines if line.startswith("| attack |")]
    assert len(rows) == 2  # generation 0 and the last one
    # C7eq's cell, recomputed by hand: per-atom population variance of the members' forces,
    # averaged over components and atoms
    for row, committee in zip(rows, committees, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        forces = committee(Batch.from_atoms([_point(grid, -80.0, 80.0)], labels=False),
                           forces=True).forces.detach().numpy()
        by_hand = forces.var(axis=0).mean()
        value, rank = cells[2].split()
        assert float(value) == pytest.approx(by_hand, rel=0.02, abs=1e-4)
        assert 1 <= int(rank.strip("(#)")) <= 266  # the scan points within 0.4 eV
        assert np.isfinite([float(cells[-2]), float(cells[-1])]).all()
