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
