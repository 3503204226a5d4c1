"""Neighbour pairs of a Batch within a cutoff, with periodic shifts, and a Verlet skin.

A pair (i, j, shift) means atom j, displaced by the lattice vector ``shift`` (Å), lies within
the cutoff of atom i; the pair vector is r_ij = positions[j] − positions[i] + shift. Lists
are full (both (i, j) and (j, i) appear) and exclude an atom paired with itself at zero
shift, but keep its periodic images. Shifts are computed in torch as integer cell shifts @
cell, so r_ij is differentiable with respect to positions and, if it requires grad, the cell.

Small non-periodic structures (molecules) are handled all at once in torch: every
intra-structure pair is enumerated by block index arithmetic and filtered by distance, with
no Python loop over structures. Periodic structures and large molecules go through
``vesin``, one structure at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import vesin

from advsample.structures import Batch

DENSE_MAX_ATOMS = 64  # molecules up to this size take the all-pairs torch path (n² pairs each)


class Pairs(NamedTuple):
    """Neighbour pairs: i, j long [P] atom indices; shift float [P, 3] lattice vectors (Å)."""

    i: torch.Tensor
    j: torch.Tensor
    shift: torch.Tensor


def pair_vectors(positions: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """r_ij = positions[j] − positions[i] + shift, float [P, 3] (Å)."""
    return positions[pairs.j] - positions[pairs.i] + pairs.shift


def neighbor_pairs(batch: Batch, cutoff: float) -> Pairs:
    """All pairs of ``batch`` (d = 3) closer than ``cutoff`` (Å)."""
    i, j, cell_shifts = _integer_pairs(batch, cutoff)
    return _lattice_pairs(batch, i, j, cell_shifts)


class NeighborList:
    """Pairs within ``cutoff`` (Å), rebuilt with ``cutoff + skin`` only when needed.

    The list built at cutoff + skin stays complete while no atom has moved more than
    skin / 2 since the build, so a call rebuilds only when some atom moved further, or the
    atom count, structure index, cell or periodicity changed; every call returns the cached
    pairs filtered to the true cutoff at the current positions. ``n_builds`` counts builds.
    """

    def __init__(self, cutoff: float, skin: float = 0.0):
        if cutoff <= 0 or skin < 0:
            raise ValueError("cutoff must be positive and skin non-negative")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.n_builds = 0
        self._reference: torch.Tensor | None = None  # float [N, 3] positions at the build
        self._structure: torch.Tensor | None = None  # long [N]
        self._cell: torch.Tensor | None = None  # float [B, 3, 3]
        self._pbc: torch.Tensor | None = None  # bool [B, 3]
        self._pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, batch: Batch) -> Pairs:
        if self._needs_build(batch):
            self._build(batch)
        i, j, cell_shifts = self._pairs
        pairs = _lattice_pairs(batch, i, j, cell_shifts)
        if self.skin == 0.0:
            return pairs
        with torch.no_grad():
            keep = pair_vectors(batch.positions, pairs).pow(2).sum(1) < self.cutoff**2
        return Pairs(pairs.i[keep], pairs.j[keep], pairs.shift[keep])

    def _needs_build(self, batch: Batch) -> bool:
        if self._reference is None or self._reference.shape != batch.positions.shape:
            return True
        if self._reference.device != batch.positions.device:
            return True
        cell = batch.cell.detach().to(self._cell.dtype)
        if not (
            torch.equal(self._structure, batch.structure)
            and torch.equal(self._pbc, batch.pbc)
            and torch.equal(self._cell, cell)
        ):
            return True
        moved = batch.positions.detach().to(self._reference.dtype) - self._reference
        return bool(len(moved)) and bool(moved.pow(2).sum(1).max() > (0.5 * self.skin) ** 2)

    def _build(self, batch: Batch) -> None:
        self._pairs = _integer_pairs(batch, self.cutoff + self.skin)
        self._reference = batch.positions.detach().to(torch.float64, copy=True)
        self._structure = batch.structure.clone()
        self._cell = batch.cell.detach().to(torch.float64, copy=True)
        self._pbc = batch.pbc.clone()
        self.n_builds += 1


def _lattice_pairs(
    batch: Batch, i: torch.Tensor, j: torch.Tensor, cell_shifts: torch.Tensor
) -> Pairs:
    """Pairs with shift = cell_shifts [P, 3] @ cell of the pair's structure, in torch."""
    cell = batch.cell[batch.structure[i]]  # [P, 3, 3]
    shift = torch.einsum("pk,pkl->pl", cell_shifts.to(cell.dtype), cell)
    return Pairs(i, j, shift)


def _integer_pairs(batch: Batch, cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i long [P], j long [P], integer cell shifts long [P, 3]) of pairs closer than cutoff."""
    if batch.dim != 3:
        raise ValueError(f"neighbour lists need 3D coordinates, got d = {batch.dim}")
    n_atoms = batch.n_atoms
    dense = ~batch.pbc.any(1) & (n_atoms <= DENSE_MAX_ATOMS)
    parts = [_dense_pairs(batch, torch.nonzero(dense).flatten(), cutoff)]
    for k in torch.nonzero(~dense).flatten().tolist():
        parts.append(_vesin_pairs(batch, k, cutoff))
    i, j, s = zip(*parts, strict=True)
    return torch.cat(i), torch.cat(j), torch.cat(s)


def _dense_pairs(batch: Batch, structures: torch.Tensor, cutoff: float):
    """All pairs of non-periodic ``structures`` [K], enumerated blockwise and filtered.

    Structure k with n_k atoms owns n_k² candidate pairs; candidate t of that block is
    the pair (t // n_k, t mod n_k) in the structure's local atom numbering.
    """
    device = batch.positions.device
    n = batch.n_atoms[structures]  # [K]
    first = batch.offsets[structures]  # [K]
    blocks = n * n  # [K]
    total = int(blocks.sum())
    block = torch.repeat_interleave(torch.arange(len(n), device=device), blocks)  # [T]
    block_start = torch.cumsum(blocks, 0) - blocks  # [K]
    local = torch.arange(total, device=device) - block_start[block]  # [T]
    size = n[block]
    a, b = local // size, local % size
    keep = a != b
    i, j = (first[block] + a)[keep], (first[block] + b)[keep]
    with torch.no_grad():
        pos = batch.positions.detach()
        keep = (pos[j] - pos[i]).pow(2).sum(1) < cutoff**2
    i, j = i[keep], j[keep]
    return i, j, torch.zeros(len(i), 3, dtype=torch.long, device=device)


def _vesin_pairs(batch: Batch, k: int, cutoff: float):
    """Pairs of structure ``k`` from vesin (periodic, or a molecule too large for n²)."""
    device = batch.positions.device
    start, stop = batch.offsets[k : k + 2].tolist()
    points = batch.positions[start:stop].detach().cpu().to(torch.float64).numpy()
    box = batch.cell[k].detach().cpu().to(torch.float64).numpy()
    periodic = batch.pbc[k].cpu().numpy()
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, s = calculator.compute(points=points, box=box, periodic=periodic, quantities="ijS")
    return (
        torch.from_numpy(i.astype(np.int64)).to(device) + start,
        torch.from_numpy(j.astype(np.int64)).to(device) + start,
        torch.from_numpy(s.astype(np.int64)).to(device),
    )


def select_pairs(pairs: Pairs, batch: Batch, index: torch.Tensor) -> Pairs:
    """The pairs of ``batch.select(index)`` taken from the pairs of ``batch``, without
    recomputing a distance: a fixed training set's pairs are built once and every minibatch
    (bootstrap repeats included: ``index`` may repeat structures) reuses them."""
    index = torch.as_tensor(index, device=batch.positions.device).long()
    owner = batch.structure[pairs.i]  # [P] structure of each pair
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=batch.n_structures)
    starts = torch.cumsum(counts, 0) - counts
    taken = counts[index]  # pairs of each selected structure
    first = torch.cumsum(taken, 0) - taken
    take = order[torch.repeat_interleave(starts[index] - first, taken)
                 + torch.arange(int(taken.sum()), device=index.device)]
    sizes = batch.n_atoms[index]
    new_offsets = torch.cumsum(sizes, 0) - sizes
    move = torch.repeat_interleave(new_offsets - batch.offsets[index], taken)
    return Pairs(pairs.i[take] + move, pairs.j[take] + move, pairs.shift[take])
