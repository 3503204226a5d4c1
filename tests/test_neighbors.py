"""Neighbour pairs equal ASE's brute-force list; the Verlet skin rebuilds only when needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from advsample.neighbors import (
    DENSE_MAX_ATOMS,
    NeighborList,
    Pairs,
    neighbor_pairs,
    pair_vectors,
    select_pairs,
)
from advsample.structures import Batch

CUTOFF = 3.0  # Å


def reference_pairs(atoms_list: list[Atoms], cutoff: float) -> set:
    """{(i, j, shift vector rounded to 1e-6 Å)} over the batch, from ase.neighborlist."""
    out = set()
    start = 0
    for atoms in atoms_list:
        i, j, s = neighbor_list("ijS", atoms, cutoff)
        shifts = s @ atoms.cell.array
        out |= {
            (int(a) + start, int(b) + start, *np.round(v, 6).tolist())
            for a, b, v in zip(i, j, shifts, strict=True)
        }
        start += len(atoms)
    return out


def as_set(pairs: Pairs) -> set:
    shifts = np.round(pairs.shift.detach().numpy(), 6)
    return {
        (a, b, *v)
        for a, b, v in zip(pairs.i.tolist(), pairs.j.tolist(), shifts.tolist(), strict=True)
    }


def molecules(rng: np.random.Generator) -> list[Atoms]:
    out = []
    for name in ["NH3", "H2O", "CH4", "C6H6", "H2"]:
        atoms = molecule(name)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        out.append(atoms)
    cluster = Atoms(  # more atoms than the dense path takes: goes through vesin
        "Ar" * (DENSE_MAX_ATOMS + 6), positions=rng.uniform(0.0, 8.0, (DENSE_MAX_ATOMS + 6, 3))
    )
    out.append(cluster)
    out.append(Atoms("He"))  # an isolated atom has no pairs
    return out


def crystals(rng: np.random.Generator) -> list[Atoms]:
    si = bulk("Si")  # 2-atom primitive cell, smaller than the cutoff: many images
    cu = bulk("Cu", cubic=True)
    tri = bulk("Si", "diamond", a=5.43, cubic=True)
    tri.set_cell(tri.cell.array + rng.normal(0.0, 0.3, (3, 3)), scale_atoms=True)
    slab = bulk("Cu", cubic=True).repeat((1, 1, 2))
    slab.pbc = [True, True, False]
    out = [si, cu, tri, slab]
    for atoms in out:
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
    return out


@pytest.mark.parametrize("kind", ["molecules", "crystals", "mixed"])
def test_pairs_equal_ase(kind):
    rng = np.random.default_rng(0)
    atoms_list = {
        "molecules": molecules(rng),
        "crystals": crystals(rng),
        "mixed": molecules(rng) + crystals(rng),
    }[kind]
    if kind == "mixed":  # periodic and non-periodic structures interleaved
        atoms_list = [atoms_list[k] for k in rng.permutation(len(atoms_list))]
    batch = Batch.from_atoms(atoms_list)
    pairs = neighbor_pairs(batch, CUTOFF)
    assert len(pairs.i) == len(as_set(pairs)), "duplicate pairs"
    assert as_set(pairs) == reference_pairs(atoms_list, CUTOFF)
    distances = pair_vectors(batch.positions, pairs).norm(dim=1)
    assert (distances < CUTOFF).all() and (distances > 0).all()


def test_pair_vectors_differentiable_in_positions_and_cell():
    rng = np.random.default_rng(1)
    atoms_list = [crystals(rng)[2], molecules(rng)[0]]
    batch = Batch.from_atoms(atoms_list)
    pairs0 = neighbor_pairs(batch, CUTOFF)

    def pair_energy(positions, cell):
        b = Batch(
            positions=positions,
            numbers=batch.numbers,
            structure=batch.structure,
            cell=cell,
            pbc=batch.pbc,
        )
        pairs = NeighborList(CUTOFF)(b)
        assert torch.equal(pairs.i, pairs0.i) and torch.equal(pairs.j, pairs0.j)
        return torch.exp(-pair_vectors(positions, pairs).pow(2).sum(1)).sum()

    positions = batch.positions.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(pair_energy, (positions, cell))


def test_verlet_skin_rebuilds_only_when_needed():
    rng = np.random.default_rng(2)
    atoms_list = crystals(rng) + molecules(rng)
    batch = Batch.from_atoms(atoms_list)
    skin = 0.6
    nl = NeighborList(CUTOFF, skin=skin)
    assert as_set(nl(batch)) == reference_pairs(atoms_list, CUTOFF)
    assert nl.n_builds == 1

    steps = 20
    positions = batch.positions.clone()
    for _ in range(steps):  # a random walk of 0.05 Å steps: rebuilds every few steps
        positions += torch.as_tensor(rng.normal(0.0, 0.05 / 3**0.5, positions.shape))
        moved = batch.with_positions(positions.clone())
        expected = reference_pairs(moved.to_atoms(), CUTOFF)
        assert as_set(nl(moved)) == expected
    assert 1 < nl.n_builds < steps // 2

    builds = nl.n_builds
    nl(moved)
    assert nl.n_builds == builds  # same positions: cached

    step = torch.zeros_like(positions)
    step[0, 0] = 0.51 * skin  # one atom moving beyond skin/2 triggers a rebuild
    nl(moved.with_positions(positions + step))
    assert nl.n_builds == builds + 1

    other = Batch.from_atoms(atoms_list[:3])  # different structures: rebuild
    assert as_set(nl(other)) == reference_pairs(atoms_list[:3], CUTOFF)
    assert nl.n_builds == builds + 2

    strained = Batch.from_atoms(atoms_list[:3])
    strained.cell = strained.cell * 1.01  # same atoms, new cell: rebuild
    nl(strained)
    assert nl.n_builds == builds + 3


def test_two_dimensional_coordinates_rejected():
    batch = Batch.from_points([[0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="3D"):
        neighbor_pairs(batch, CUTOFF)


def test_selected_pairs_equal_the_pairs_of_the_selection():
    rng = np.random.default_rng(3)
    atoms_list = molecules(rng) + crystals(rng)
    batch = Batch.from_atoms(atoms_list, labels=False)
    pairs = neighbor_pairs(batch, CUTOFF)
    for index in ([0], [len(atoms_list) - 1, 0], [1, 1, 2], list(range(len(atoms_list)))[::-1]):
        chosen = [atoms_list[k] for k in index]
        taken = select_pairs(pairs, batch, torch.tensor(index))
        assert as_set(taken) == reference_pairs(chosen, CUTOFF)
        assert len(taken.i) == len(reference_pairs(chosen, CUTOFF))  # repeats kept, no extras
