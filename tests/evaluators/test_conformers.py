"""Conformer evaluator: periodic grid minima, dihedrals vs ASE, metrics vs numpy on a toy
five-atom chain, plots, and the committed alanine-dipeptide data (when present)."""

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from advsample.committee import Committee
from advsample.evaluators.conformers import (
    ConformerEvaluator,
    angle_difference,
    basin_counts,
    dihedral_angles,
    grid_minima,
    load_grid,
    plot,
    ramachandran_figure,
    thermal_ceiling,
)
from advsample.loop import EvaluationContext
from advsample.structures import Batch

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
PHI, PSI = [0, 1, 2, 3], [1, 2, 3, 4]  # the toy chain's two dihedrals
AXIS = np.arange(-180.0, 180.0, 30.0)  # 12 points


def _surface(phi, psi):
    """Toy energy (eV): minima at (±180, -90) and (±180, 90), 0.4 eV range."""
    return 0.1 * np.cos(np.radians(phi)) + 0.1 * np.cos(np.radians(2 * psi))


def _chain(phi: float, psi: float, noise: float = 0.0, seed: int = 0) -> Atoms:
    """Five-carbon chain (1.5 Å bonds, 110° angles) with dihedrals φ = 0-1-2-3, ψ = 1-2-3-4."""
    a = np.radians(110.0)
    pos = [[0.0, 0.0, 0.0]]
    for k in range(1, 5):  # planar zig-zag
        pos.append([1.5 * k * np.sin(a / 2), 0.0, (k % 2) * 1.5 * np.cos(a / 2)])
    atoms = Atoms("C5", positions=pos)
    atoms.set_dihedral(*PHI, phi % 360, indices=[3, 4])
    atoms.set_dihedral(*PSI, psi % 360, indices=[4])
    atoms.positions += np.random.default_rng(seed).normal(0, noise, atoms.positions.shape)
    return atoms


def _grid(shuffle: bool = True) -> list:
    """The toy reference grid: chains at every (φ, ψ) of AXIS² labelled with _surface and
    random forces, in a shuffled order (the evaluator must not rely on the order)."""
    rng = np.random.default_rng(1)
    frames = []
    for phi in AXIS:
        for psi in AXIS:
            a = _chain(phi, psi)
            a.calc = SinglePointCalculator(a, energy=float(_surface(phi, psi)),
                                           forces=rng.normal(0, 0.1, (5, 3)))
            a.info.update(phi=phi, psi=psi)
            frames.append(a)
    if shuffle:
        frames = [frames[k] for k in rng.permutation(len(frames))]
    return frames


def _labelled(atoms: Atoms, energy: float) -> Atoms:
    atoms.calc = SinglePointCalculator(atoms, energy=energy,
                                       forces=np.zeros((len(atoms), 3)))
    return atoms


def _context(committee, training: list, generations=None):
    batch = Batch.from_atoms(training, labels=all(a.calc is not None for a in training))
    gens = np.zeros(len(training), int) if generations is None else np.asarray(generations)
    return EvaluationContext(1, committee, batch, gens, torch.device("cpu"), None)


def test_grid_minima_of_a_periodic_analytic_surface():
    phi, psi = np.meshgrid(AXIS, AXIS, indexing="ij")
    minima = grid_minima(_surface(phi, psi))
    assert sorted(map(tuple, minima.tolist())) == [(0, 3), (0, 9)]  # φ = -180, ψ = ∓90
    # a ramp along φ whose lowest row is the last one: with wrap-around, row 0 has a lower
    # neighbour (the last row); without it, row 0 is a minimum of its own.
    ramp = np.roll(np.arange(12.0), -1)[:, None] + np.cos(np.radians(2 * AXIS))[None, :]
    assert sorted(map(tuple, grid_minima(ramp).tolist())) == [(11, 3), (11, 9)]
    assert sorted(map(tuple, grid_minima(ramp, periodic=False).tolist())) == [
        (0, 3), (0, 9), (11, 3), (11, 9)]
    e = np.full((5, 5), 3.0)
    e[2, 2], e[0, 4] = 1.0, 0.5
    assert grid_minima(e).tolist() == [[0, 4], [2, 2]]  # lowest first
    assert grid_minima(np.zeros((4, 4))).shape == (0, 2)  # ties are not minima


def test_dihedral_angles_match_ase():
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(6):
        a = molecule("CH3CH2OH")
        a.positions += rng.normal(0, 0.3, a.positions.shape)
        frames.append(a)
    quads = [[3, 0, 1, 2], [0, 1, 2, 8], [4, 0, 1, 6]]
    ours = dihedral_angles(np.stack([a.positions for a in frames]), quads)  # [F, Q]
    ref = np.array([[a.get_dihedral(*q) for q in quads] for a in frames])
    assert ours.shape == (6, 3)
    np.testing.assert_allclose(angle_difference(ours, ref), 0.0, atol=1e-8)
    assert np.all((ours >= -180) & (ours < 180))
    torch_in = dihedral_angles(torch.tensor(frames[0].positions), quads[0])
    assert torch_in.shape == () and torch_in == pytest.approx(ours[0, 0])
    chain = _chain(-150.0, 75.0)
    np.testing.assert_allclose(dihedral_angles(chain.positions, [PHI, PSI]), [-150, 75])
    assert angle_difference(170.0, -170.0) == pytest.approx(-20.0)


def test_evaluator_metrics_equal_an_independent_computation():
    grid = _grid()
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=4.0, n_rbf=8)
    for m in committee.members:
        m.fit_statistics(Batch.from_atoms(grid))
    ev = ConformerEvaluator(grid, PHI, PSI, window_eV=0.15, basin_radius_deg=30)
    basins = np.array(ev.basins)
    np.testing.assert_allclose(basins, [[-180, -90, 0], [-180, 90, 0]], atol=1e-12)
    lowest = min(a.get_potential_energy() for a in grid)
    ceiling = thermal_ceiling(5, 300.0)  # 9 modes at 300 K: 0.39 eV
    assert ev.basin_energy_eV == pytest.approx(ceiling) and 0.3 < ceiling < 0.5
    training = [_labelled(_chain(175.0, 85.0, 0.01), lowest + ceiling - 0.01),  # in the
                # (±180, 90) basin across the φ edge, as high as a thermal frame may be
                _labelled(_chain(-180.0, -90.0, 0.01), lowest + ceiling + 0.01),  # angles
                # of the (-180, -90) basin, but too high in energy to be that conformer
                _labelled(_chain(-180.0, -30.0, 0.01), lowest),  # 60° away: not in it
                _labelled(molecule("H2O"), -10.0)]  # another composition: ignored
    result = ev.evaluate(_context(committee, training, [0, 1, 1, 1]))
    for key in ("type", "basins", "basins_visited", "fraction_basins_visited", "energy_rmse",
                "energy_mae", "forces_rmse", "errors", "reference", "training_phi_psi",
                "seconds", "phi_axis", "psi_axis", "basin_counts"):
        assert key in result, key
    assert result["type"] == "conformers"
    assert result["basins_visited"] == 1 and result["basin_counts"] == [0, 1]
    assert result["fraction_basins_visited"] == 0.5
    assert result["basin_energy_eV"] == pytest.approx(ceiling)
    np.testing.assert_allclose(result["training_phi_psi"],
                               [[175, 85], [-180, -90], [-180, -30]], atol=3)
    assert result["training_generation"] == [0, 1, 1]
    angles_only = ConformerEvaluator(grid, PHI, PSI, window_eV=0.15, basin_radius_deg=30,
                                     basin_temperature_K=None)
    assert angles_only.evaluate(_context(committee, training))["basin_counts"] == [1, 1]

    batch = Batch.from_atoms(grid)
    out = committee(batch.without_labels())
    pred = out.energy.detach().numpy().mean(0)
    ref = np.array([a.get_potential_energy() for a in grid])
    k = int(np.argmin(ref))
    de = (pred - pred[k]) - (ref - ref[k])
    inside = ref - ref.min() <= 0.15
    assert 0 < inside.sum() < len(grid) and result["window_points"] == inside.sum()
    assert result["energy_rmse"] == pytest.approx(np.sqrt(np.mean(de[inside] ** 2)))
    assert result["energy_mae"] == pytest.approx(np.mean(np.abs(de[inside])))
    forces = out.forces.detach().numpy().mean(0).reshape(len(grid), 5, 3)
    df = forces[inside] - np.stack([a.get_forces() for a in grid])[inside]
    assert result["forces_rmse"] == pytest.approx(np.sqrt(np.mean(df**2)))
    errors = np.array(result["errors"])  # [n_phi, n_psi] over the sorted axes
    i = np.searchsorted(AXIS, [a.info["phi"] for a in grid])
    j = np.searchsorted(AXIS, [a.info["psi"] for a in grid])
    np.testing.assert_allclose(errors[i, j], de, atol=1e-10)
    np.testing.assert_allclose(np.array(result["reference"])[i, j], ref - ref.min(), atol=1e-12)


def test_thermal_ceiling_matches_sampled_harmonic_energies():
    """The ceiling is mean + 4 std of the potential energy of 3N - 6 harmonic modes at T:
    checked against energies sampled from independent Gaussian modes."""
    kT = 8.617333262e-5 * 300.0
    modes = 3 * 22 - 6
    rng = np.random.default_rng(0)
    q = rng.normal(0.0, np.sqrt(kT), (200_000, modes))  # unit stiffness: <q^2> = kT
    energy = 0.5 * (q**2).sum(axis=1)
    assert thermal_ceiling(22, 300.0, sigmas=0.0) == pytest.approx(energy.mean(), rel=1e-3)
    assert thermal_ceiling(22, 300.0) == pytest.approx(energy.mean() + 4 * energy.std(),
                                                       rel=1e-2)
    assert (energy > thermal_ceiling(22, 300.0)).mean() < 1e-3
    counts = basin_counts([[0, 0], [0, 0], [90, 0]], [0.1, 2.0, 0.0], [[0, 0, 0.05]], 30, 1.0)
    assert counts.tolist() == [1]


def test_incomplete_grid_and_bad_quadruples_are_rejected():
    grid = _grid(shuffle=False)
    with pytest.raises(ValueError, match="grid"):
        ConformerEvaluator(grid[:-1], PHI, PSI)
    with pytest.raises(ValueError, match="4 atom indices"):
        ConformerEvaluator(grid, PHI[:3], PSI)


def test_plots_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = _grid()
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=4.0, n_rbf=8)
    for m in committee.members:
        m.fit_statistics(Batch.from_atoms(grid))
    ev = ConformerEvaluator(grid, PHI, PSI)
    entries = [(g, ev.evaluate(_context(committee, [_labelled(_chain(-170.0, 95.0), 0.0)]
                                        * (g + 1))))
               for g in range(2)]
    fig, axes = plt.subplots(1, 2)
    plot(entries, *axes)
    plt.close(fig)
    out = ramachandran_figure(grid, [PHI, PSI], [_chain(-170.0, 95.0)],
                              entries[-1][1]["errors"], tmp_path / "rama.png", title="toy")
    assert out.stat().st_size > 0
    lowest = min(a.get_potential_energy() for a in grid)
    labelled = [_labelled(_chain(-170.0, 95.0), lowest), _labelled(_chain(60.0, 0.0), 50.0)]
    assert ramachandran_figure(grid, [PHI, PSI], labelled, None,
                               tmp_path / "hot.png").stat().st_size > 0
    flat = [0.01] * len(grid)  # errors in the order of the grid frames
    assert ramachandran_figure(grid, [PHI, PSI], np.zeros((0, 2)), flat,
                               tmp_path / "flat.png").exists()


def test_committed_alanine_dipeptide_data():
    molecule_file = DATA / "alanine_dipeptide.extxyz"
    grid_file = DATA / "alanine_phi_psi_grid.extxyz"
    if not (molecule_file.exists() and grid_file.exists()):
        pytest.skip("alanine dipeptide data not built (benchmarks/alanine_reference.py)")
    atoms = ase.io.read(molecule_file, format="extxyz")
    assert len(atoms) == 22 and atoms.get_chemical_formula() == "C6H12N2O2"
    phi, psi = ([int(x) for x in atoms.info[k]] for k in ("phi_atoms", "psi_atoms"))
    angles = dihedral_angles(atoms.positions, [phi, psi])
    assert np.all(np.abs(angle_difference(angles, [-83.0, 73.0])) < 15), angles
    grid = load_grid(grid_file)
    assert len(grid) == 324 and all(len(a) == 22 for a in grid)
    ev = ConformerEvaluator(grid, phi, psi)
    basins = np.array(ev.basins)  # [n_b, 3]
    near_c7eq = np.all(np.abs(angle_difference(basins[:, :2], [-83.0, 73.0])) <= 20, axis=1)
    assert near_c7eq.any() and basins[near_c7eq, 2].min() < 0.02
    assert (basins[:, 0] > 0).any()


@pytest.mark.parametrize("basin", [(-80.0, 80.0), (80.0, -60.0)])  # C7eq, C7ax
def test_thermal_oracle_md_holds_its_basin_and_a_torn_molecule_does_not(basin):
    """Known cases for the basin judge on the real molecule: 300 K GFN2-xTB MD started at
    a relaxed grid point of a basin holds that basin and no other (all frames are under the
    energy ceiling; ψ of C7ax frames wanders up to ~31° from the grid's basin point, so a
    few may leave the 30° box); the same frames with one methyl H pulled 1.5 Å out keep
    their φ and ψ but hold nothing."""
    pytest.importorskip("tblite")
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tblite.ase import TBLite

    grid_file = DATA / "alanine_phi_psi_grid.extxyz"
    if not grid_file.exists():
        pytest.skip("alanine dipeptide data not built (benchmarks/alanine_reference.py)")
    grid = load_grid(grid_file)
    phi, psi = ([int(x) for x in grid[0].info[k]] for k in ("phi_atoms", "psi_atoms"))
    ev = ConformerEvaluator(grid, phi, psi)
    basins = np.array(ev.basins)
    target = int(np.argmin(np.abs(angle_difference(basins[:, :2], basin)).sum(axis=1)))
    start = next(a for a in grid if (a.info["phi"], a.info["psi"]) == basin).copy()
    start.calc = TBLite(method="GFN2-xTB", verbosity=0)
    MaxwellBoltzmannDistribution(start, temperature_K=600, rng=np.random.default_rng(0))
    md = Langevin(start, 0.5 * units.fs, temperature_K=300, friction=0.02, fixcm=False,
                  rng=np.random.default_rng(1))
    frames, energies = [], []
    for _ in range(12):
        md.run(25)
        frames.append(start.positions.copy())
        energies.append(start.get_potential_energy())
    frames = np.array(frames)
    angles = dihedral_angles(frames, [phi, psi])  # [F, 2]
    counts = ev.count_basins(angles, energies)
    assert counts[target] >= 0.75 * len(frames) and counts.sum() == counts[target], counts
    assert np.all(np.array(energies) - min(a.get_potential_energy() for a in grid)
                  <= basins[target, 2] + ev.basin_energy_eV)
    hydrogen = next(i for i in range(len(start)) if start.numbers[i] == 1
                    and i not in phi + psi)
    torn = frames.copy()
    torn[:, hydrogen] += [1.5, 0.0, 0.0]
    torn_energies = []
    for x in torn:
        start.positions = x
        torn_energies.append(start.get_potential_energy())
    assert np.allclose(dihedral_angles(torn, [phi, psi]), angles)
    assert ev.count_basins(angles, torn_energies).sum() == 0
