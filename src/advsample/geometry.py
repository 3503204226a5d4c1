"""Geometric checks on batches: interatomic distances within structures.

Used as constraints and sanity filters (no gradients needed). Molecules are handled fully
vectorised over all intra-structure pairs; periodic structures go through vesin (via
:mod:`advsample.neighbors`) one cell at a time, only for pairs closer than a search radius.
"""

from __future__ import annotations

import torch

from advsample.neighbors import neighbor_pairs, pair_vectors
from advsample.structures import Batch


def intra_structure_pairs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """All atom pairs (i < j) inside each structure: two long tensors [P]."""
    n_per_atom = batch.n_atoms[batch.structure]  # [N] size of the atom's structure
    i = torch.repeat_interleave(torch.arange(len(n_per_atom), device=batch.device), n_per_atom)
    start = torch.repeat_interleave(torch.cumsum(n_per_atom, 0) - n_per_atom, n_per_atom)
    local = torch.arange(i.numel(), device=batch.device) - start
    j = batch.offsets[batch.structure[i]] + local
    keep = i < j
    return i[keep], j[keep]


def min_interatomic_distance(batch: Batch, within: float = 3.0) -> torch.Tensor:
    """Shortest interatomic distance of each structure [B] (Å); inf for single atoms.

    Molecules: exact over all pairs. Periodic structures (including an atom and its own
    images): only pairs closer than ``within`` (Å) are searched, inf when there are none;
    checks of the form ``distance < threshold`` pass the threshold for speed.
    """
    out = batch.positions.new_full((batch.n_structures,), float("inf"))
    periodic = batch.pbc.any(dim=1)
    if (~periodic).any():
        i, j = intra_structure_pairs(batch)
        mol = ~periodic[batch.structure[i]]
        i, j = i[mol], j[mol]
        d = (batch.positions[j] - batch.positions[i]).detach().norm(dim=1)
        out = out.scatter_reduce(0, batch.structure[i], d, reduce="amin", include_self=True)
    if periodic.any():
        index = torch.nonzero(periodic).flatten()
        cells = batch.select(index)
        with torch.no_grad():
            pairs = neighbor_pairs(cells, within)
            d = pair_vectors(cells.positions.detach(), pairs).norm(dim=1)
        closest = batch.positions.new_full((len(index),), float("inf"))
        closest = closest.scatter_reduce(0, cells.structure[pairs.i], d.to(batch.dtype),
                                         reduce="amin", include_self=True)
        out[index] = closest
    return out
