import numpy as np
from ase import units
from ase.build import molecule
from ase.md.verlet import VelocityVerlet

from advsample.calculator import CommitteeCalculator
from advsample.committee import Committee


def _committee():
    return Committee.build("painn", 3, features=8, interactions=2, cutoff=4.0, n_rbf=8,
                           dtype="float64")


def test_results_hold_mean_and_spread():
    committee = _committee()
    atoms = molecule("NH3")
    atoms.calc = CommitteeCalculator(committee)
    e = atoms.get_potential_energy()
    r = atoms.calc.results
    assert np.isclose(e, r["energies"].mean())
    np.testing.assert_allclose(r["forces"], r["forces_committee"].mean(0))
    per_atom = r["forces_committee"].var(axis=0).mean(axis=1)
    np.testing.assert_allclose(r["atom_force_variance"], per_atom, rtol=1e-10)
    assert np.isclose(r["force_variance"], per_atom.mean())
    assert np.isclose(r["energy_std"], r["energies"].std())


def test_nve_md_with_the_committee_conserves_energy(tmp_path):
    committee = _committee()
    committee.save(tmp_path / "c.pt")
    atoms = molecule("NH3")
    atoms.calc = CommitteeCalculator(str(tmp_path / "c.pt"))
    rng = np.random.default_rng(0)
    kT = units.kB * 300
    atoms.set_momenta(rng.normal(size=(4, 3)) * np.sqrt(atoms.get_masses()[:, None] * kT))
    md = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    totals = []
    for _ in range(40):
        md.run(5)
        totals.append(atoms.get_total_energy())
    kinetic = atoms.get_kinetic_energy()
    assert np.ptp(totals) < 0.02 * max(kinetic, 0.01)


def test_stress_equals_finite_difference_of_energy_under_strain():
    from ase.build import bulk

    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                                dtype="float64")
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=3)
    atoms.calc = CommitteeCalculator(committee)
    stress = atoms.get_stress()  # Voigt, eV/Å³
    h = 1e-5
    volume = atoms.get_volume()
    for k, (i, j) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = sign * h / (1 if i == j else 2)
            a = atoms.copy()
            a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            a.calc = CommitteeCalculator(committee)
            energies.append(a.get_potential_energy())
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert np.isclose(stress[k], fd, rtol=1e-5, atol=1e-9)
