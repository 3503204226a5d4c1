"""Batched Langevin dynamics: units, energy conservation, thermostat, batching, constraints.

Physics checked: with zero friction BAOAB is velocity Verlet, so it follows ASE's
VelocityVerlet step for step and conserves the total energy of a smooth potential; with
friction the kinetic and potential energies of harmonic systems obey equipartition at the
target temperature; structures do not interact, so a batch moves exactly as its structures
one by one given the same random numbers; net momentum stays zero and fixed atoms stay put.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import units
from ase.build import molecule
from ase.md.verlet import VelocityVerlet

from advsample.calculator import CommitteeCalculator
from advsample.committee import Committee
from advsample.dynamics import (
    committee_forces,
    degrees_of_freedom,
    init_state,
    kinetic_energy,
    langevin_step,
    temperature,
)
from advsample.structures import Batch, concatenate


def painn_committee(energy_scale: float = 1.0) -> Committee:
    """Two tiny float64 PaiNN members; ``energy_scale`` (eV) sets the size of their forces."""
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                                dtype="float64")
    for member in committee.members:
        member.energy_scale.fill_(energy_scale)
    return committee


def harmonic_points(k: float):
    """ForcesFn of independent points in a harmonic well E = ½ k |x|² (k in eV/Å²)."""

    def forces_fn(batch: Batch):
        energy = torch.zeros(batch.n_structures, dtype=batch.dtype).index_add(
            0, batch.structure, 0.5 * k * batch.positions.pow(2).sum(1)
        )
        return energy, -k * batch.positions

    return forces_fn


def harmonic_bonds(k: float, r0: float):
    """ForcesFn of a harmonic spring k (r − r0)²/2 between the two atoms of every structure."""

    def forces_fn(batch: Batch):
        x = batch.positions.view(-1, 2, 3)
        r = x[:, 1] - x[:, 0]
        d = r.norm(dim=1, keepdim=True)
        pull = k * (d - r0) * r / d  # force on atom 0
        return 0.5 * k * (d.squeeze(1) - r0) ** 2, torch.stack([pull, -pull], 1).view(-1, 3)

    return forces_fn


def test_zero_friction_is_velocity_verlet_of_ase():
    committee = painn_committee(energy_scale=20.0)
    atoms = molecule("NH3")
    forces_fn = committee_forces(committee)
    state = init_state(Batch.from_atoms([atoms], labels=False), forces_fn, 500.0,
                       torch.Generator().manual_seed(1))
    reference = atoms.copy()
    reference.calc = CommitteeCalculator(committee)
    reference.set_momenta(state.momenta.numpy())
    for _ in range(50):
        state = langevin_step(state, forces_fn, 0.5, 500.0, friction_per_fs=0.0)
    VelocityVerlet(reference, timestep=0.5 * units.fs).run(50)
    np.testing.assert_allclose(state.batch.positions.numpy(), reference.positions, atol=1e-10)
    np.testing.assert_allclose(state.momenta.numpy(), reference.get_momenta(), atol=1e-10)


def test_zero_friction_conserves_total_energy_to_second_order():
    # Random PaiNN members push the atoms around (the kinetic energy more than doubles); the
    # total energy stays within 1e-3 of the energy exchanged, and its error falls as dt².
    committee = painn_committee(energy_scale=2.0)
    atoms = [molecule(name) for name in ("NH3", "H2O", "CH4")]
    forces_fn = committee_forces(committee)

    def run(dt_fs: float) -> tuple[torch.Tensor, torch.Tensor]:
        state = init_state(Batch.from_atoms(atoms, labels=False), forces_fn, 300.0,
                           torch.Generator().manual_seed(0))
        total, kinetic = [state.energy + kinetic_energy(state)], [kinetic_energy(state)]
        for _ in range(round(75 / dt_fs)):
            state = langevin_step(state, forces_fn, dt_fs, 300.0, friction_per_fs=0.0)
            total.append(state.energy + kinetic_energy(state))
            kinetic.append(kinetic_energy(state))
        total, kinetic = torch.stack(total), torch.stack(kinetic)  # [T, B] (eV)
        exchanged = kinetic.max(0).values - kinetic.min(0).values
        return (total - total[0]).abs().max(0).values, exchanged

    coarse, _ = run(0.5)
    fine, exchanged = run(0.25)
    assert (exchanged > 0.02).all()
    assert (fine < 1e-3 * exchanged).all()
    ratio = coarse / fine
    assert ((ratio > 3) & (ratio < 5.5)).all(), ratio


def test_thermostat_obeys_equipartition():
    # 256 two-dimensional points of mass 1 amu in a harmonic well, started at rest at 0 K:
    # ⟨p²/2m⟩ = ⟨k x²/2⟩ = kT/2 per coordinate once the thermostat has done its work.
    k, target = 2.0, 600.0
    batch = Batch.from_points(np.zeros((256, 2)))
    forces_fn = harmonic_points(k)
    generator = torch.Generator().manual_seed(0)
    state = init_state(batch, forces_fn, 0.0, generator)
    kinetic, potential = [], []
    for step in range(1500):
        state = langevin_step(state, forces_fn, 1.0, target, 0.05, generator)
        if step >= 300:
            kinetic.append(kinetic_energy(state).mean())
            potential.append(state.energy.mean())
    half_kT_per_point = 2 * 0.5 * units.kB * target  # two coordinates
    assert abs(float(torch.stack(kinetic).mean()) / half_kT_per_point - 1) < 0.05
    assert abs(float(torch.stack(potential).mean()) / half_kT_per_point - 1) < 0.05


def test_thermostat_temperature_counts_removed_momentum():
    # 128 diatomics on springs: 6 coordinates less 3 for the removed net momentum.
    n = 128
    positions = np.zeros((2 * n, 3))
    positions[1::2, 0] = 1.1
    batch = Batch(
        positions=torch.as_tensor(positions), numbers=torch.full((2 * n,), 7),
        structure=torch.arange(n).repeat_interleave(2),
        cell=torch.zeros(n, 3, 3, dtype=torch.float64), pbc=torch.zeros(n, 3, dtype=torch.bool),
    )
    assert (degrees_of_freedom(batch) == 3).all()
    forces_fn = harmonic_bonds(k=20.0, r0=1.1)
    generator = torch.Generator().manual_seed(0)
    state = init_state(batch, forces_fn, 1000.0, generator)
    temperatures = []
    for step in range(1200):
        state = langevin_step(state, forces_fn, 1.0, 1000.0, 0.05, generator)
        momentum = state.momenta.view(n, 2, 3).sum(1)
        assert momentum.abs().max() < 1e-10
        if step >= 200:
            temperatures.append(temperature(state).mean())
    assert abs(float(torch.stack(temperatures).mean()) / 1000.0 - 1) < 0.05


def test_batch_moves_as_its_structures_one_by_one():
    committee = painn_committee(energy_scale=5.0)
    forces_fn = committee_forces(committee)
    atoms = [molecule(name) for name in ("NH3", "H2O", "CH4")]
    batch = Batch.from_atoms(atoms, labels=False)
    generator = torch.Generator().manual_seed(3)
    noise = [torch.randn(batch.positions.shape, generator=generator, dtype=batch.dtype)
             for _ in range(20)]
    momenta = torch.randn(batch.positions.shape, generator=generator, dtype=batch.dtype)

    def run(part: Batch, atoms_of_part: slice) -> torch.Tensor:
        state = init_state(part, forces_fn, 0.0)
        state.momenta = momenta[atoms_of_part]
        for xi in noise:
            state = langevin_step(state, forces_fn, 0.5, 800.0, 0.1, noise=xi[atoms_of_part])
        return state.batch.positions

    together = run(batch, slice(None))
    offsets = batch.offsets.tolist()
    apart = torch.cat([run(batch.select([i]), slice(offsets[i], offsets[i + 1]))
                       for i in range(batch.n_structures)])
    torch.testing.assert_close(together, apart, rtol=0, atol=1e-10)


def test_same_seed_same_trajectory():
    committee = painn_committee(energy_scale=5.0)
    forces_fn = committee_forces(committee)
    batch = Batch.from_atoms([molecule("NH3"), molecule("H2O")], labels=False)

    def run(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        state = init_state(batch, forces_fn, 500.0, generator)
        for _ in range(10):
            state = langevin_step(state, forces_fn, 0.5, 500.0, 0.1, generator)
        return state.batch.positions

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.allclose(run(0), run(1))


def test_fixed_atoms_stay_and_free_structures_keep_zero_momentum():
    committee = painn_committee(energy_scale=5.0)
    forces_fn = committee_forces(committee)
    pinned = Batch.from_atoms([molecule("NH3")], labels=False)
    pinned.fixed = torch.tensor([True, False, False, False])
    batch = concatenate([pinned, Batch.from_atoms([molecule("H2O")], labels=False)])
    assert degrees_of_freedom(batch).tolist() == [9.0, 6.0]
    generator = torch.Generator().manual_seed(0)
    state = init_state(batch, forces_fn, 800.0, generator)
    for _ in range(20):
        state = langevin_step(state, forces_fn, 0.5, 800.0, 0.1, generator)
    torch.testing.assert_close(state.batch.positions[0], batch.positions[0], rtol=0, atol=0)
    water_momentum = state.momenta[4:].sum(0)
    assert water_momentum.abs().max() < 1e-12
