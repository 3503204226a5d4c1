"""Torsion angles θ about rotatable bonds as attack variables (collective variables).

Turning a bond j–k of a molecule by θ rigidly rotates every atom on k's side of the bond
(the connected component holding k once the bond is cut) about the axis through j and k.
Bond lengths, bond angles and all distances within each side are kept; only the dihedral
angles across the bond change, each by θ.

Conventions (angles in radians):

- θ > 0 is a right-handed rotation of the moving side about the axis pointing from the fixed
  end j to the moving end k. Every dihedral a–j–k–b (a bonded to j, b bonded to k) then
  grows by θ as ``ase.Atoms.get_dihedral(a, j, k, b)`` measures it (in degrees there).
- Which side moves does not change that: the relative twist of the two sides is the same,
  and the energy of a molecule is invariant under the rigid rotation that tells the two
  choices apart. The smaller side is moved (fewer atoms change, smaller moves of atoms far
  from the axis); a bond given as (j, k) whose j side is smaller is stored as (k, j).
- Bonds are pairs closer than ``tolerance`` (1.2) times the sum of covalent radii, the rule
  of the stability judge (:func:`advsample.stability.starting_bonds`).

Only non-periodic structures (molecules) take torsions: in a periodic cell a side of a bond
may be the whole infinite framework.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from advsample.stability import BOND_TOLERANCE, starting_bonds
from advsample.structures import Batch

CARBON, NITROGEN, OXYGEN = 6, 7, 8


def bond_graph(numbers, positions, tolerance: float = BOND_TOLERANCE) -> list[set[int]]:
    """Connectivity of one molecule: ``graph[i]`` is the set of atoms bonded to atom i.

    numbers: [n] atomic numbers; positions: [n, 3] (Å), arrays or tensors. Two atoms are
    bonded when closer than ``tolerance`` times the sum of their covalent radii
    (ase.data.covalent_radii), as in :func:`advsample.stability.starting_bonds`.
    """
    return bond_graphs(_molecule(numbers, positions), tolerance)[0]


def moving_side(bond: tuple[int, int], graph: list[set[int]]) -> np.ndarray:
    """Atoms (sorted indices, long [m]) rotated when the bond j–k is turned.

    The two sides are the components holding j and k once the bond is cut; the smaller one
    is returned (k's side on a tie). It contains the bond end it is attached to (k, or j
    when j's side is smaller). Raises ValueError when j and k are not bonded or the bond is
    in a ring (the sides are then not separate).
    """
    sides = _sides(graph, *bond)
    if sides is None:
        raise ValueError(f"bond {bond[0]}-{bond[1]} is in a ring: it cannot be turned rigidly")
    side_j, side_k = sides
    side = side_j if len(side_j) < len(side_k) else side_k
    return np.array(sorted(side), dtype=np.int64)


def rotatable_bonds(numbers, positions, tolerance: float = BOND_TOLERANCE
                    ) -> list[tuple[int, int]]:
    """All rotatable bonds (j, k), j < k, of one molecule, found from its connectivity.

    numbers: [n]; positions: [n, 3] (Å). A bond j–k is rotatable when

    - it is not in a ring;
    - j has a heavy (non-hydrogen) neighbour besides k, and k has one besides j: turning a
      bond whose side holds only hydrogens (methyl, NH3+, OH, NH2 rotors; bonds to terminal
      atoms) moves hydrogens only, which Cartesian displacements already explore;
    - it is not an amide C–N bond: a carbon bonded to a carbonyl oxygen (an O with one
      neighbour) and to the nitrogen (partial double bond, planar).

    Connectivity alone does not see other double bonds (C=C, C=N) or the partial double
    bonds of esters: they count as rotatable when the rules above allow it; pass explicit
    bonds to :meth:`TorsionSet.from_batch` to control them. Alanine dipeptide
    CC(=O)NC(C)C(=O)NC gives its φ (N–Cα) and ψ (Cα–C) bonds; butane its central C–C.
    """
    numbers = torch.as_tensor(numbers).cpu().long().numpy()
    return _rotatable(numbers, bond_graph(numbers, positions, tolerance))


@dataclass
class TorsionSet:
    """Torsions of a batch of B structures, N atoms, S slots (most torsions of a structure).

    j: long [B, S] global index of the fixed bond end (on the rotation axis);
    k: long [B, S] global index of the moving bond end; the axis points from j to k;
    moving: bool [S, N] atoms rotated by slot s (k's side without k, which is on the axis);
    valid: bool [B, S] whether structure b has a torsion in slot s (False: a dummy that
    moves nothing; its j = k = the structure's first atom);
    structure: long [N] structure of each atom (as ``Batch.structure``).
    Slots are applied in order, so a later slot turns about its bond as earlier slots left it.
    """

    j: torch.Tensor
    k: torch.Tensor
    moving: torch.Tensor
    valid: torch.Tensor
    structure: torch.Tensor

    @property
    def n_structures(self) -> int:
        """Number of structures B."""
        return self.j.shape[0]

    @property
    def n_slots(self) -> int:
        """Number of torsion slots S."""
        return self.j.shape[1]

    @property
    def offsets(self) -> torch.Tensor:
        """long [B+1]: first atom of each structure, and N at the end."""
        n_atoms = torch.bincount(self.structure, minlength=self.n_structures)
        return torch.cat([n_atoms.new_zeros(1), torch.cumsum(n_atoms, 0)])

    @classmethod
    def from_batch(cls, batch: Batch, bonds, tolerance: float = BOND_TOLERANCE) -> TorsionSet:
        """Torsions of ``batch`` (d = 3).

        bonds: "rotatable" (each structure's :func:`rotatable_bonds`; periodic structures get
        none) or a list of B lists of bonds (j, k) in local atom indices of each structure
        (an explicit bond must be a bond of the connectivity, not in a ring, and its
        structure must not be periodic). The smaller side of each bond moves, unless it holds
        an atom of ``batch.fixed``: then the other side moves; bonds with fixed atoms on
        both sides raise ValueError when explicit and are skipped when "rotatable".
        """
        if batch.dim != 3:
            raise ValueError("torsions need 3D structures")
        b = batch.n_structures
        automatic = isinstance(bonds, str)
        if automatic and bonds != "rotatable":
            raise ValueError(f"torsions must be 'rotatable' or a list of bonds, not {bonds!r}")
        if not automatic and len(bonds) != b:
            raise ValueError(f"need one list of bonds per structure ({b}), got {len(bonds)}")
        periodic = batch.pbc.any(dim=1).tolist()
        graphs = bond_graphs(batch, tolerance)
        numbers = batch.numbers.cpu().numpy()
        fixed = None if batch.fixed is None else batch.fixed.cpu().numpy()
        offsets = batch.offsets.tolist()
        per_structure = []  # [(j, k, moving local indices)] of each structure
        for s in range(b):
            lo, hi = offsets[s], offsets[s + 1]
            if automatic:
                chosen = [] if periodic[s] else _rotatable(numbers[lo:hi], graphs[s])
            else:
                chosen = [(int(j), int(k)) for j, k in bonds[s]]
                if chosen and periodic[s]:
                    raise ValueError(f"structure {s} is periodic: torsions need molecules")
            torsions = []
            for j, k in chosen:
                if not (0 <= j < hi - lo and 0 <= k < hi - lo) or j == k:
                    raise ValueError(f"bond {j}-{k} is not a pair of atoms of structure {s}")
                sides = _sides(graphs[s], j, k)
                if sides is None:
                    raise ValueError(f"bond {j}-{k} of structure {s} is not a bond or is in a "
                                     "ring: it cannot be turned rigidly")
                side_j, side_k = sides
                options = [(j, k, side_k), (k, j, side_j)]
                if len(side_j) < len(side_k):
                    options.reverse()
                if fixed is not None:
                    options = [o for o in options
                               if not any(fixed[lo + i] for i in o[2] if i != o[1])]
                if not options:
                    if automatic:
                        continue
                    raise ValueError(f"bond {j}-{k} of structure {s} has fixed atoms on both "
                                     "sides")
                torsions.append(options[0])
            per_structure.append(torsions)
        return cls._build(per_structure, batch.structure, offsets)

    @classmethod
    def _build(cls, per_structure: list, structure: torch.Tensor, offsets: list) -> TorsionSet:
        """TorsionSet from [(j, k, moving side incl. k)] per structure in local indices."""
        b, n = len(per_structure), structure.numel()
        slots = max((len(t) for t in per_structure), default=0)
        device = structure.device
        first = torch.tensor([min(o, max(n - 1, 0)) for o in offsets[:b]], dtype=torch.long)
        j = first[:, None].repeat(1, slots)
        k = j.clone()
        valid = torch.zeros(b, slots, dtype=torch.bool)
        moving = torch.zeros(slots, n, dtype=torch.bool)
        for s, torsions in enumerate(per_structure):
            for slot, (jj, kk, side) in enumerate(torsions):
                j[s, slot] = offsets[s] + jj
                k[s, slot] = offsets[s] + kk
                valid[s, slot] = True
                atoms = torch.tensor(sorted(set(side) - {kk}), dtype=torch.long)
                moving[slot, offsets[s] + atoms] = True
        return cls(j.to(device), k.to(device), moving.to(device), valid.to(device), structure)

    def local_bonds(self) -> list[list[tuple[int, int]]]:
        """The (fixed end, moving end) of each structure's torsions, local atom indices."""
        start = self.offsets[:-1, None]
        j, k = (self.j - start).tolist(), (self.k - start).tolist()
        valid = self.valid.tolist()
        return [[(j[s][t], k[s][t]) for t in range(self.n_slots) if valid[s][t]]
                for s in range(self.n_structures)]

    def select(self, index) -> TorsionSet:
        """The torsions of the structures at ``index`` (ints or bool mask over B), in that
        order, with atom indices of ``batch.select(index)``."""
        index = torch.as_tensor(index, device=self.j.device)
        if index.dtype == torch.bool:
            index = torch.nonzero(index).flatten()
        index = index.long().flatten()
        offsets = self.offsets
        sizes = offsets[1:][index] - offsets[:-1][index]
        first = torch.cumsum(sizes, 0) - sizes  # where each selected structure begins
        atom_idx = (torch.repeat_interleave(offsets[:-1][index] - first, sizes)
                    + torch.arange(int(sizes.sum()), device=self.j.device))
        n = atom_idx.numel()
        shift = (first - offsets[:-1][index])[:, None]
        dummy = first.clamp(max=max(n - 1, 0))[:, None]
        valid = self.valid[index]
        return TorsionSet(
            j=torch.where(valid, self.j[index] + shift, dummy),
            k=torch.where(valid, self.k[index] + shift, dummy),
            moving=self.moving[:, atom_idx],
            valid=valid,
            structure=torch.repeat_interleave(torch.arange(len(index), device=self.j.device),
                                              sizes),
        )

    def repeat(self, times: int) -> TorsionSet:
        """Each structure's torsions ``times`` times in a row, matching ``Batch.repeat``."""
        return self.select(torch.arange(self.n_structures, device=self.j.device)
                           .repeat_interleave(times))


def apply_torsions(positions: torch.Tensor, torsions: TorsionSet,
                   theta: torch.Tensor) -> torch.Tensor:
    """Positions [N, 3] (Å) after turning every torsion s of structure b by theta[b, s] (rad).

    Slot after slot, the axis is taken from the current positions of j and k, and the moving
    atoms are rotated about it by Rodrigues' formula
    v' = v cos θ + (u × v) sin θ + u (u·v)(1 − cos θ), v = x − x_j, u = (x_k − x_j)/|x_k − x_j|.
    Vectorised over structures and atoms (a Python loop over the S slots only);
    differentiable with respect to ``positions`` and ``theta`` [B, S]. Atoms not moved are
    returned bit for bit.
    """
    if torsions.n_slots == 0 or positions.shape[0] == 0:
        return positions
    theta = theta.to(positions.dtype)
    structure = torsions.structure
    x = positions
    unit = positions.new_tensor([1.0, 0.0, 0.0])
    for s in range(torsions.n_slots):
        valid = torsions.valid[:, s]
        origin = x[torsions.j[:, s]]  # [B, 3]
        axis = torch.where(valid[:, None], x[torsions.k[:, s]] - origin, unit)
        u = axis / axis.norm(dim=1, keepdim=True)
        angle = torch.where(valid, theta[:, s], torch.zeros_like(theta[:, s]))
        cos, sin = torch.cos(angle)[structure, None], torch.sin(angle)[structure, None]
        u_atom, o_atom = u[structure], origin[structure]  # [N, 3]
        v = x - o_atom
        rotated = (o_atom + v * cos + torch.linalg.cross(u_atom, v) * sin
                   + u_atom * (u_atom * v).sum(dim=1, keepdim=True) * (1 - cos))
        x = torch.where(torsions.moving[s][:, None], rotated, x)
    return x


# ------------------------------------------------------------------------------- helpers
def _molecule(numbers, positions) -> Batch:
    """One non-periodic structure from numbers [n] and positions [n, 3] (Å)."""
    pos = torch.as_tensor(positions).detach().cpu().to(torch.float64)
    z = torch.as_tensor(numbers).cpu().long()
    return Batch(positions=pos, numbers=z, structure=torch.zeros(len(z), dtype=torch.long),
                 cell=torch.zeros(1, 3, 3, dtype=torch.float64),
                 pbc=torch.zeros(1, 3, dtype=torch.bool))


def bond_graphs(batch: Batch, tolerance: float = BOND_TOLERANCE) -> list[list[set[int]]]:
    """Bond graph of every structure of ``batch`` in local indices (one pass over all pairs;
    periodic structures get the bonds of their neighbour list, images folded back)."""
    with torch.no_grad():
        bonds = starting_bonds(batch.to(dtype=torch.float64), tolerance)
    offsets = batch.offsets.tolist()
    structure = batch.structure.tolist()
    graphs = [[set() for _ in range(offsets[s + 1] - offsets[s])]
              for s in range(batch.n_structures)]
    for i, j in zip(bonds.i.tolist(), bonds.j.tolist()):
        if i == j:
            continue
        s = structure[i]
        a, b = i - offsets[s], j - offsets[s]
        graphs[s][a].add(b)
        graphs[s][b].add(a)
    return graphs


def _component(graph: list[set[int]], start: int, cut: tuple[int, int]) -> set[int]:
    """Atoms reachable from ``start`` without crossing the bond ``cut``."""
    seen, queue = {start}, deque([start])
    a, b = cut
    while queue:
        i = queue.popleft()
        for n in graph[i]:
            if n in seen or {i, n} == {a, b}:
                continue
            seen.add(n)
            queue.append(n)
    return seen


def _sides(graph: list[set[int]], j: int, k: int):
    """(j's side, k's side) of the bond j–k, or None if they are not bonded or in a ring."""
    if k not in graph[j]:
        return None
    side_k = _component(graph, k, (j, k))
    if j in side_k:
        return None
    return _component(graph, j, (j, k)), side_k


def _is_amide(numbers: np.ndarray, graph: list[set[int]], c: int, n: int) -> bool:
    """Whether c–n is an amide bond: c a carbon with a carbonyl O (one neighbour), n a N."""
    return (numbers[c] == CARBON and numbers[n] == NITROGEN
            and any(numbers[o] == OXYGEN and len(graph[o]) == 1 for o in graph[c]))


def _rotatable(numbers: np.ndarray, graph: list[set[int]]) -> list[tuple[int, int]]:
    """The rotatable bonds (j < k) of one molecule given its numbers [n] and bond graph."""
    def heavy_beyond(a, partner):
        """Whether atom ``a`` has a non-hydrogen neighbour other than ``partner``."""
        return any(numbers[n] > 1 for n in graph[a] if n != partner)

    out = []
    for j in range(len(graph)):
        for k in sorted(graph[j]):
            if k <= j or not (heavy_beyond(j, k) and heavy_beyond(k, j)):
                continue
            if _is_amide(numbers, graph, j, k) or _is_amide(numbers, graph, k, j):
                continue
            if _sides(graph, j, k) is None:  # in a ring
                continue
            out.append((j, k))
    return out
