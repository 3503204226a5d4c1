"""Evaluators against independent computations: CVs vs ASE, test-set errors vs numpy,
path barriers, the cached generated path, the grid RMSE."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from scipy.stats import spearmanr

from advsample.committee import Committee
from advsample.evaluators import CoverageEvaluator, GridEvaluator, PathEvaluator, TestSetEvaluator
from advsample.evaluators.coverage import collective_variable
from advsample.evaluators.path import barrier, generated_path
from advsample.loop import EvaluationContext
from advsample.oracles import make_oracle
from advsample.oracles.analytic import DoubleWell2D
from advsample.structures import Batch

PAINN = {"features": 8, "interactions": 1, "cutoff": 4.0, "n_rbf": 8}


def _frames(name, n, scale=0.08, seed=0, calc=EMT):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = molecule(name)
        a.positions += rng.normal(0, scale, a.positions.shape)
        a.calc = calc()
        a.get_forces()
        out.append(a)
    return out


def _context(committee, training, generation=0, generations=None):
    gens = np.zeros(training.n_structures, int) if generations is None else generations
    return EvaluationContext(generation, committee, training, gens, torch.device("cpu"), None)


def test_collective_variables_match_ase():
    frames = _frames("CH3CH2OH", 5, scale=0.1)
    batch = Batch.from_atoms(frames)
    for atoms, ase_fn in (([0, 3], "get_distance"), ([0, 1, 2], "get_angle"),
                          ([3, 0, 1, 2], "get_dihedral")):
        ours = collective_variable(batch, atoms).numpy()
        ref = np.array([getattr(a, ase_fn)(*atoms) for a in frames])
        if len(atoms) == 4:  # ASE: 0..360, ours: -180..180
            ref = (ref + 180) % 360 - 180
        np.testing.assert_allclose(ours, ref, atol=1e-8)


def test_coverage_counts_cells_and_new_ones():
    frames = _frames("H2O", 6)
    for k, a in enumerate(frames):
        a.positions[2] = a.positions[0] + 0.9 * np.array([np.cos(0.3 * k), np.sin(0.3 * k), 0])
    batch = Batch.from_atoms(frames)
    ev = CoverageEvaluator([[1, 0, 2]], bins=180)
    gens = np.array([0, 0, 0, 1, 1, 1])
    result = ev.evaluate(_context(None, batch, generation=1, generations=gens))
    cells = ev.cells(np.array(result["values"]))
    assert result["occupied"] == len(set(cells))
    assert result["new_cells"] == len(set(cells[3:]) - set(cells[:3]))
    assert result["cells"] == 180 and result["fraction"] == result["occupied"] / 180
    with pytest.raises(ValueError, match="ranges"):
        CoverageEvaluator([[0, 1]])


def test_test_set_errors_equal_an_independent_computation():
    train, test = _frames("NH3", 8), _frames("NH3", 6, seed=1) + _frames("CH4", 4, seed=2)
    committee = Committee.build("painn", 3, seed=0, **PAINN)
    for m in committee.members:
        m.fit_statistics(Batch.from_atoms(train))
    result = TestSetEvaluator(test).evaluate(_context(committee, Batch.from_atoms(train)))
    batch = Batch.from_atoms(test)
    out = committee(batch.without_labels())
    e = out.energy.detach().numpy().mean(0)
    f_members = out.forces.detach().numpy()  # [M, N, 3]
    f = f_members.mean(0)
    n = np.array([len(a) for a in test])
    de = (e - np.array([a.get_potential_energy() for a in test])) / n
    df = f - np.concatenate([a.get_forces() for a in test])
    assert result["energy_rmse"] == pytest.approx(np.sqrt(np.mean(de**2)))
    assert result["forces_mae"] == pytest.approx(np.abs(df).mean())
    hydrogen = np.concatenate([a.numbers for a in test]) == 1
    assert result["per_element"]["H"]["forces_rmse"] == pytest.approx(
        np.sqrt(np.mean(df[hydrogen] ** 2)))
    starts = np.concatenate([[0], np.cumsum(n)])
    var = f_members.var(0).mean(1)
    sigma = np.array([np.sqrt(var[a:b].mean()) for a, b in zip(starts, starts[1:])])
    error = np.array([np.sqrt((df[a:b] ** 2).mean()) for a, b in zip(starts, starts[1:])])
    np.testing.assert_allclose(result["sigma"], sigma, rtol=1e-6)
    assert result["sigma_error_spearman"] == pytest.approx(spearmanr(sigma, error).statistic)


def test_path_barrier_and_errors():
    assert barrier([0.0, 0.1, 0.3, 0.1, 0.0]) == 0.3
    assert barrier([1.0, 1.5, 0.2]) == 0.5
    path = _frames("NH3", 5, seed=4)
    committee = Committee.build("painn", 2, seed=0, **PAINN)
    for m in committee.members:
        m.fit_statistics(Batch.from_atoms(path))
    result = PathEvaluator(path).evaluate(_context(committee, Batch.from_atoms(path)))
    assert result["energy"][0] == 0 and result["reference"][0] == 0
    ref = np.array([a.get_potential_energy() for a in path])
    assert result["barrier_reference"] == pytest.approx(barrier(ref - ref[0]))
    assert result["barrier_error"] == pytest.approx(result["barrier"] - result["barrier_reference"])
    assert result["coordinate"] == list(range(5))


class CountingOracle:
    """An xTB oracle that counts its label calls."""

    def __init__(self):
        self.inner = make_oracle({"type": "xtb"})
        self.calls = 0

    def calculator(self):
        return self.inner.calculator()

    def label(self, atoms):
        self.calls += 1
        return self.inner.label(atoms)


def test_generated_inversion_path_is_labelled_once_and_cached(tmp_path):
    oracle = CountingOracle()
    cache = tmp_path / "path.extxyz"
    frames, h = generated_path("umbrella_inversion", molecule("NH3"), oracle, cache, points=9)
    assert oracle.calls == 9 and cache.exists()
    assert h[4] == pytest.approx(0, abs=1e-9) and h[0] == pytest.approx(-h[-1])
    energies = np.array([a.get_potential_energy() for a in frames])
    assert 0.2 < barrier(energies - energies[0]) < 0.35  # GFN2-xTB: about 0.265 eV
    again, h2 = generated_path("umbrella_inversion", molecule("NH3"), oracle, cache, points=9)
    assert oracle.calls == 9 and h2 == pytest.approx(h)
    np.testing.assert_allclose([a.get_potential_energy() for a in again], energies)


def test_grid_rmse_matches_numpy():
    surface = DoubleWell2D()
    committee = Committee.build("mlp", 2, seed=0, dim=2, width=8, depth=1)
    training = surface.uniform_points(50, seed=0)
    result = GridEvaluator(surface, resolution=11).evaluate(_context(committee, training))
    grid = surface.grid(11)
    pred = committee(Batch.from_points(grid), forces=False).mean_energy.detach().numpy()
    err = pred - surface.energy(grid)
    assert result["rmse_grid"] == pytest.approx(np.sqrt(np.mean(err**2)))
    low = surface.energy(grid) < 0
    assert result["rmse_low"] == pytest.approx(np.sqrt(np.mean(err[low] ** 2)))
