"""Steric clashes: non-bonded atoms of a molecule pushed into each other.

A torsion turned rigidly keeps every bond but can drive one side of a molecule into the
other: alanine dipeptide turned to φ ≈ 0 puts a carbonyl O and an amide H 0.8-1.0 Å apart,
10 eV above the minimum, while a committee that never saw such a contact may predict a
moderate energy. A minimum distance in Å cannot tell this from a bond (an O-H bond is
~1 Å); a distance relative to the pair's covalent radii can:

    contact (i, j) holds  ⇔  |x_i − x_j| ≥ factor · (r_i + r_j)

for every pair of atoms of one molecule that are neither bonded nor bonded to a common atom
in the reference geometry (the seed; bonds as in :func:`advsample.stability.starting_bonds`,
closer than 1.2 (r_i + r_j)), with r the covalent radii of ``ase.data.covalent_radii``. For
reference (GFN2-xTB, alanine dipeptide): thermal conformers at 300 K keep every such pair
at ≥ 1.7 (r_i + r_j) (intramolecular N-H···O=C hydrogen bonds included, ~2.1), and every
label more than 1.9 eV above the minimum among the attack labels of the alanine benchmark
had a pair at ≤ 1.4. Periodic structures have no contacts checked (their bonded neighbours
are images).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ase.data import covalent_radii

from advsample.stability import BOND_TOLERANCE
from advsample.structures import Batch
from advsample.torsions import bond_graphs


@dataclass
class ContactSet:
    """Non-bonded pairs of a batch and the distance each must keep.

    i, j: long [P] global atom indices (same structure, neither bonded nor 1-3 in the
    reference); minimum: [P] (Å), factor · (r_i + r_j); structure: long [P], the pair's
    structure; n_structures: B.
    """

    i: torch.Tensor
    j: torch.Tensor
    minimum: torch.Tensor
    structure: torch.Tensor
    n_structures: int

    @classmethod
    def from_batch(cls, batch: Batch, factor: float,
                   tolerance: float = BOND_TOLERANCE) -> ContactSet:
        """The contacts of every non-periodic structure of ``batch`` (its geometry is the
        reference for which pairs are bonded); ``factor`` > 0 scales the covalent radii."""
        if not factor > 0:
            raise ValueError(f"contact factor must be positive, got {factor!r}")
        graphs = bond_graphs(batch, tolerance)
        offsets = batch.offsets.tolist()
        periodic = batch.pbc.any(dim=1).tolist()
        pairs = []
        for s, graph in enumerate(graphs):
            if periodic[s]:
                continue
            for a in range(len(graph)):
                near = graph[a].union(*(graph[b] for b in graph[a]))  # 1-2 and 1-3
                pairs += [(offsets[s] + a, offsets[s] + b, s)
                          for b in range(a + 1, len(graph)) if b not in near]
        index = torch.tensor(pairs, dtype=torch.long, device=batch.device).reshape(-1, 3)
        radii = torch.as_tensor(covalent_radii, dtype=batch.positions.dtype,
                                device=batch.device)[batch.numbers]
        i, j = index[:, 0], index[:, 1]
        return cls(i=i, j=j, minimum=factor * (radii[i] + radii[j]), structure=index[:, 2],
                   n_structures=batch.n_structures)

    def hold(self, positions: torch.Tensor) -> torch.Tensor:
        """bool [B]: every contact of the structure at least its minimum apart, for atom
        positions [N, 3] (Å) in the batch's atom order."""
        with torch.no_grad():
            distance = (positions[self.i] - positions[self.j]).norm(dim=-1)
            clash = (distance < self.minimum).to(positions.dtype)
            count = clash.new_zeros(self.n_structures).index_add(0, self.structure, clash)
        return count == 0
