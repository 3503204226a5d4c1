"""PaiNN through a reusable battery of physics checks for 3D energy models.

``EnergyModelBattery`` holds the checks; a model's test class subclasses it and supplies
``make_model``. Every check states the physics: invariances of the energy, forces equal to
minus the finite-difference gradient, batched equals one-by-one, smoothness at the cutoff,
extensivity and locality, lattice periodicity, and a double backward through the forces.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from advsample.committee import Committee
from advsample.models import build_model
from advsample.models.base import EnergyModel
from advsample.models.painn import PaiNN
from advsample.structures import Batch

TOLERANCE = {  # equal up to rounding
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
}
FD_STEP = 1e-5  # Å, central differences in float64
FD_TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}  # truncation error ~ step² plus rounding


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation [3, 3]."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def molecules(rng: np.random.Generator) -> list[Atoms]:
    """Distorted NH3, H2O and CH4."""
    out = []
    for name in ["NH3", "H2O", "CH4"]:
        atoms = molecule(name)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        out.append(atoms)
    return out


def crystals(rng: np.random.Generator) -> list[Atoms]:
    """A rattled 8-atom diamond Si cell and a rattled 2-atom primitive cell (both periodic)."""
    cubic = bulk("Si", "diamond", a=5.43, cubic=True)
    primitive = bulk("Si", "diamond", a=5.43)
    for atoms in (cubic, primitive):
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    return [cubic, primitive]


def energy_forces(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies [B] (eV) and forces −∂E/∂positions [N, 3] (eV/Å)."""
    positions = batch.positions.detach().requires_grad_(True)
    energy = model(batch.with_positions(positions))
    (gradient,) = torch.autograd.grad(energy.sum(), positions)
    return energy.detach(), -gradient


def displaced_copies(batch: Batch, step: float) -> Batch:
    """For each coordinate (atom a, axis k): a's structure with x_ak + step, then − step.

    Returns 6N structures: the +step copies of all 3N coordinates, then the −step copies,
    so (value[:3N] − value[3N:]) / 2·step is a central difference per coordinate.
    """
    n = batch.positions.shape[0]
    atom = torch.arange(n).repeat_interleave(3)  # [3N]
    axis = torch.arange(3).repeat(n)  # [3N]
    owner = batch.structure[atom]  # [3N]
    copies = batch.select(torch.cat([owner, owner]))
    local = atom - batch.offsets[owner]
    index = copies.offsets[:-1] + local.repeat(2)
    positions = copies.positions.clone()
    positions[index, axis.repeat(2)] += torch.cat(
        [torch.full((3 * n,), step), torch.full((3 * n,), -step)]
    ).to(positions.dtype)
    return copies.with_positions(positions)


def central_difference(values: torch.Tensor) -> torch.Tensor:
    """[6N] values of :func:`displaced_copies` → derivative per coordinate [N, 3]."""
    half = values.shape[0] // 2
    return ((values[:half] - values[half:]) / (2 * FD_STEP)).reshape(-1, 3)


def force_variance(committee: Committee, batch: Batch, create_graph: bool) -> torch.Tensor:
    """Σ over atoms of each structure of the committee variance of forces [B] (eV²/Å²)."""
    forces = committee(batch, create_graph=create_graph).forces  # [M, N, 3]
    per_atom = forces.var(0).sum(1)
    return per_atom.new_zeros(batch.n_structures).index_add(0, batch.structure, per_atom)


class EnergyModelBattery:
    """Checks every 3D energy model must pass. Subclasses define ``make_model() -> EnergyModel``.

    ``cutoff`` is the model's interaction range (Å); ``dtype`` the precision of the batches.
    """

    cutoff: float
    dtype = torch.float64

    @pytest.fixture
    def model(self) -> EnergyModel:
        torch.manual_seed(0)
        model = self.make_model()
        with torch.no_grad():  # non-trivial statistics, so forward's shift and scale count
            model.element_energy.normal_()
            model.energy_scale.fill_(1.7)
        return model

    @pytest.fixture
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(0)

    def batch(self, atoms_list: list[Atoms]) -> Batch:
        return Batch.from_atoms(atoms_list, dtype=self.dtype, labels=False)

    def assert_close(self, actual, expected):
        torch.testing.assert_close(actual, expected, **TOLERANCE[self.dtype])

    # ------------------------------------------------------------- invariances
    def test_rotation_invariance(self, model, rng):
        atoms_list = molecules(rng) + crystals(rng)
        energy, forces = energy_forces(model, self.batch(atoms_list))
        rotation = random_rotation(rng)
        for atoms in atoms_list:
            atoms.set_cell(atoms.cell.array @ rotation.T)
            atoms.positions = atoms.positions @ rotation.T
        rotated_energy, rotated_forces = energy_forces(model, self.batch(atoms_list))
        self.assert_close(rotated_energy, energy)
        self.assert_close(rotated_forces, forces @ torch.as_tensor(rotation.T, dtype=self.dtype))

    def test_translation_invariance(self, model, rng):
        atoms_list = molecules(rng) + crystals(rng)
        energy, forces = energy_forces(model, self.batch(atoms_list))
        for atoms in atoms_list:
            atoms.positions += rng.normal(0.0, 3.0, 3)
        self.assert_close(energy_forces(model, self.batch(atoms_list))[0], energy)
        self.assert_close(energy_forces(model, self.batch(atoms_list))[1], forces)

    def test_permutation_invariance(self, model, rng):
        atoms_list = molecules(rng) + crystals(rng)
        batch = self.batch(atoms_list)
        energy, forces = energy_forces(model, batch)
        order = torch.cat(  # shuffle atoms within each structure
            [
                int(start) + torch.as_tensor(rng.permutation(int(stop - start)))
                for start, stop in zip(batch.offsets[:-1], batch.offsets[1:], strict=True)
            ]
        )
        shuffled = Batch(
            positions=batch.positions[order],
            numbers=batch.numbers[order],
            structure=batch.structure,
            cell=batch.cell,
            pbc=batch.pbc,
        )
        shuffled_energy, shuffled_forces = energy_forces(model, shuffled)
        self.assert_close(shuffled_energy, energy)
        self.assert_close(shuffled_forces, forces[order])

    def test_lattice_translation_and_wrapping(self, model, rng):
        cell = crystals(rng)[0]
        energy, forces = energy_forces(model, self.batch([cell]))
        moved = cell.copy()
        moved.positions[3] += cell.cell[0] - 2 * cell.cell[2]
        shifted = cell.copy()
        shifted.positions += np.array([7.1, -3.3, 11.9])  # out of the cell, then wrapped
        shifted.wrap()
        for atoms in (moved, shifted):
            e, f = energy_forces(model, self.batch([atoms]))
            self.assert_close(e, energy)
            self.assert_close(f, forces)

    # ---------------------------------------------------------------- gradients
    def test_forces_are_minus_energy_gradient(self, model, rng):
        if self.dtype != torch.float64:
            pytest.skip("finite differences need float64")
        batch = self.batch(molecules(rng) + crystals(rng)[:1])
        _, forces = energy_forces(model, batch)
        with torch.no_grad():
            displaced = model(displaced_copies(batch, FD_STEP))
        torch.testing.assert_close(-central_difference(displaced), forces, **FD_TOLERANCE)

    def test_committee_forces_equal_autograd(self, model, rng):
        torch.manual_seed(1)
        committee = Committee([model, self.make_model()])
        batch = self.batch(molecules(rng) + crystals(rng))
        out = committee(batch)
        for member, member_forces in zip(committee.members, out.forces, strict=True):
            self.assert_close(member_forces, energy_forces(member, batch)[1])

    def test_force_variance_gradient_by_double_backward(self, model, rng):
        if self.dtype != torch.float64:
            pytest.skip("finite differences need float64")
        torch.manual_seed(1)
        committee = Committee([model, self.make_model()])
        batch = self.batch(molecules(rng)[:1] + crystals(rng)[:1])
        positions = batch.positions.detach().requires_grad_(True)
        loss = force_variance(committee, batch.with_positions(positions), create_graph=True)
        (gradient,) = torch.autograd.grad(loss.sum(), positions)
        displaced = force_variance(committee, displaced_copies(batch, FD_STEP), False)
        torch.testing.assert_close(gradient, central_difference(displaced.detach()), **FD_TOLERANCE)

    # ------------------------------------------------------- members evaluated together
    def _committee_of_three(self, model) -> Committee:
        torch.manual_seed(1)
        committee = Committee([model, self.make_model(), self.make_model()])
        with torch.no_grad():  # members with their own statistics
            for k, member in enumerate(committee.members[1:], start=1):
                member.element_energy.normal_()
                member.energy_scale.fill_(0.5 + k)
        return committee

    def test_vectorized_committee_equals_the_member_loop(self, model, rng):
        if not type(model).supports_members:
            pytest.skip(f"{type(model).__name__} evaluates one member at a time")
        committee = self._committee_of_three(model)
        batch = self.batch(molecules(rng) + crystals(rng))
        assert committee.vectorized
        together = committee(batch)
        committee.vectorize = False
        alone = committee(batch)
        self.assert_close(together.energy, alone.energy)
        self.assert_close(together.forces, alone.forces)
        # second derivatives, as the attack takes them: d(force variance)/d(positions)
        gradients = []
        for vectorize in (True, False):
            committee.vectorize = vectorize
            positions = batch.positions.detach().requires_grad_(True)
            loss = force_variance(committee, batch.with_positions(positions), True).sum()
            gradients.append(torch.autograd.grad(loss, positions)[0])
        self.assert_close(*gradients)

    def test_members_on_their_own_batches_equal_each_member_alone(self, model, rng):
        if not type(model).supports_members:
            pytest.skip(f"{type(model).__name__} evaluates one member at a time")
        from advsample.neighbors import select_pairs

        committee = self._committee_of_three(model)
        full = self.batch(molecules(rng) + crystals(rng))
        pairs = model.pairs(full, cached=False)
        picks = [torch.tensor([0, 3]), torch.tensor([4, 4]), torch.tensor([2, 1])]
        batches = [full.select(i) for i in picks]
        out, real = committee.forward_members(
            [0, 1, 2], batches, [select_pairs(pairs, full, i) for i in picks])
        for k, batch in enumerate(batches):
            energy, forces = energy_forces(committee.members[k], batch)
            self.assert_close(out.energy[k], energy)
            self.assert_close(out.forces[k][real[k]], forces)
            assert int(real[k].sum()) == batch.positions.shape[0]

    # ------------------------------------------------------ batching and locality
    def test_batched_equals_one_by_one(self, model, rng):
        atoms_list = molecules(rng) + crystals(rng)
        energy, forces = energy_forces(model, self.batch(atoms_list))
        alone = [energy_forces(model, self.batch([atoms])) for atoms in atoms_list]
        self.assert_close(energy, torch.cat([e for e, _ in alone]))
        self.assert_close(forces, torch.cat([f for _, f in alone]))

    def test_separated_molecules_add_up(self, model, rng):
        a, b = molecules(rng)[:2]
        together = a.copy()
        b_far = b.copy()
        b_far.positions += [self.cutoff + 4.0, 0.0, 0.0]
        together += b_far
        energy = energy_forces(model, self.batch([together]))[0]
        parts = energy_forces(model, self.batch([a, b]))[0]
        self.assert_close(energy, parts.sum(0, keepdim=True))

    def test_supercell_energy_is_extensive(self, model, rng):
        for cell in crystals(rng):
            supercell = cell.repeat((2, 1, 1))
            energy = energy_forces(model, self.batch([cell, supercell]))[0]
            self.assert_close(energy[1], 2 * energy[0])

    def test_smooth_as_a_pair_crosses_the_cutoff(self, model):
        """N–H pair at r_c ± h: energy and force tend to their values beyond the cutoff."""

        def at(distance: float) -> tuple[torch.Tensor, torch.Tensor]:
            atoms = Atoms("NHH", positions=[[0, 0, 0], [1.0, 0, 0], [0, distance, 0]])
            energy, forces = energy_forces(model, self.batch([atoms]))
            return energy[0], forces[2, 1]

        far_energy, far_force = at(self.cutoff + 0.1)
        assert far_force == 0.0
        jumps = [at(self.cutoff + sign * h) for h in (1e-2, 1e-3) for sign in (-1, 1)]
        energy_jump = [abs(float(e - far_energy)) for e, _ in jumps]
        force_jump = [abs(float(f)) for _, f in jumps]
        assert energy_jump[1] == force_jump[1] == energy_jump[3] == force_jump[3] == 0.0
        assert 0.0 < energy_jump[2] < 1e-2 * energy_jump[0]  # energy continuous, flat
        assert 0.0 < force_jump[2] < 0.2 * force_jump[0]  # force continuous

    # --------------------------------------------------------------- checkpoints
    def test_committee_checkpoint_round_trip(self, model, rng):
        torch.manual_seed(1)
        committee = Committee([model, self.make_model()])
        state = committee.state()
        json.dumps(state["hyperparameters"])
        batch = self.batch(molecules(rng) + crystals(rng))
        loaded = Committee.from_state(state)
        self.assert_close(loaded(batch).energy, committee(batch).energy)


class TestPaiNN(EnergyModelBattery):
    cutoff = 3.0

    def make_model(self) -> PaiNN:
        return PaiNN(
            features=16, interactions=2, cutoff=self.cutoff, n_rbf=8, skin=0.3, dtype="float64"
        )

    def test_flat_coordinates_rejected(self, model):
        with pytest.raises(ValueError, match="d = 3"):
            model(Batch.from_points([[0.0, 1.0]]))

    def test_float32_network_matches_float64(self, model, rng):
        single = build_model("painn", **{**model.hyperparameters, "dtype": "float32"})
        single.load_state_dict(model.state_dict())
        batch = self.batch(molecules(rng) + crystals(rng))
        energy = single(batch)
        assert energy.dtype == self.dtype
        torch.testing.assert_close(energy, model(batch), **TOLERANCE[torch.float32])

    def test_fit_statistics_normalises_by_mean_neighbours(self, model, rng):
        batch = self.batch(molecules(rng)).with_labels(torch.tensor([1.0, 2.0, 3.0]), None)
        n_pairs = sum(len(a) * (len(a) - 1) for a in molecules(rng))  # all within 3 Å
        model.fit_statistics(batch)
        assert float(model.neighbor_scale) == pytest.approx(batch.positions.shape[0] / n_pairs)
