"""Geometric checks on batches: interatomic distances within structures.

Used as constraints and sanity filters (no gradients needed). Molecules are handled fully
vectorised over all intra-structure pairs; periodic structures go through ASE's neighbour
list one cell at a time (they are few and large).
"""

from __future__ import annotations

import numpy as np
import torch

from advsample.structures import Batch


def intra_structure_pairs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """All atom pairs (i < j) inside each structure: two long tensors [P]."""
    n_per_atom = batch.n_atoms[batch.structure]  # [N] size of the atom's structure
    i = torch.repeat_interleave(torch.arange(batch.positions.shape[0]), n_per_atom)
    start = torch.cumsum(n_per_atom, 0) - n_per_atom
    local = torch.arange(i.numel()) - torch.repeat_interleave(start, n_per_atom)
    j = batch.offsets[batch.structure[i]] + local
    keep = i < j
    return i[keep], j[keep]


def min_interatomic_distance(batch: Batch) -> torch.Tensor:
    """Shortest interatomic distance of each structure [B] (Å); inf for single atoms."""
    out = torch.full((batch.n_structures,), float("inf"), dtype=batch.dtype)
    periodic = batch.pbc.any(dim=1)
    if (~periodic).any():
        i, j = intra_structure_pairs(batch)
        mol = ~periodic[batch.structure[i]]
        i, j = i[mol], j[mol]
        d = (batch.positions[j] - batch.positions[i]).detach().norm(dim=1)
        out = out.scatter_reduce(0, batch.structure[i], d, reduce="amin", include_self=True)
    if periodic.any():
        from ase.neighborlist import neighbor_list

        atoms = batch.select(torch.nonzero(periodic).flatten()).to_atoms()
        for k, a in zip(torch.nonzero(periodic).flatten().tolist(), atoms):
            d = neighbor_list("d", a, 3.0)
            out[k] = float(np.min(d)) if len(d) else float("inf")
    return out
