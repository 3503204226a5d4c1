"""Many structures as one flat batch of tensors.

A :class:`Batch` holds B structures with N atoms in total. Per-atom fields are indexed by
atom (first dimension N), per-structure fields by structure (first dimension B); the
``structure`` field maps each atom to its structure. Coordinates have dimension d: 3 for
atoms, 2 or 1 for the analytic toys (one "atom" per structure whose coordinates are the
toy's variables), so toys and molecules go through the same code.

Units follow ASE: positions in Å, energies in eV, forces in eV/Å.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

PER_ATOM = ("positions", "numbers", "structure", "forces", "fixed")
PER_STRUCTURE = ("cell", "pbc", "energy")


class StructureError(ValueError):
    """Raised when structures are malformed (non-finite coordinates, bad shapes, ...)."""


@dataclass(kw_only=True)
class Batch:
    """B structures, N atoms, coordinates of dimension d.

    positions: float [N, d] (Å)
    numbers:   long [N] atomic numbers (0 for toy coordinates)
    structure: long [N] index of each atom's structure, non-decreasing, values 0..B-1
    cell:      float [B, d, d] lattice vectors as rows (zeros where not periodic)
    pbc:       bool [B, d]
    energy:    float [B] (eV) labels, optional
    forces:    float [N, d] (eV/Å) labels, optional
    fixed:     bool [N] atoms an attack must not move, optional
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    structure: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    fixed: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, d = self.positions.shape
        b = self.cell.shape[0]
        if self.numbers.shape != (n,) or self.structure.shape != (n,):
            raise StructureError("numbers and structure must have shape [N]")
        if self.cell.shape != (b, d, d) or self.pbc.shape != (b, d):
            raise StructureError(f"cell must be [B,{d},{d}] and pbc [B,{d}]")
        if self.energy is not None and self.energy.shape != (b,):
            raise StructureError("energy must have shape [B]")
        if self.forces is not None and self.forces.shape != (n, d):
            raise StructureError("forces must have shape [N, d]")
        if self.fixed is not None and self.fixed.shape != (n,):
            raise StructureError("fixed must have shape [N]")
        if n and (torch.diff(self.structure) < 0).any():
            raise StructureError("structure index must be non-decreasing")

    # ----------------------------------------------------------------- sizes
    @property
    def n_structures(self) -> int:
        """Number of structures B."""
        return self.cell.shape[0]

    @property
    def dim(self) -> int:
        """Coordinate dimension d."""
        return self.positions.shape[1]

    @property
    def n_atoms(self) -> torch.Tensor:
        """long [B]: atoms per structure."""
        return torch.bincount(self.structure, minlength=self.n_structures)

    @property
    def offsets(self) -> torch.Tensor:
        """long [B+1]: first atom of each structure, and N at the end."""
        return torch.cat([self.n_atoms.new_zeros(1), torch.cumsum(self.n_atoms, 0)])

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point dtype of the positions."""
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        """Device of the positions."""
        return self.positions.device

    # ---------------------------------------------------------- constructors
    @classmethod
    def from_points(cls, points, energy=None, forces=None, dtype=torch.float64) -> Batch:
        """Toy structures: one point of dimension d per structure. points: [B, d]."""
        x = torch.as_tensor(np.asarray(points), dtype=dtype)
        if x.ndim != 2:
            raise StructureError("points must have shape [B, d]")
        _check_finite(x, "points")
        b, d = x.shape
        return cls(
            positions=x,
            numbers=torch.zeros(b, dtype=torch.long),
            structure=torch.arange(b),
            cell=torch.zeros(b, d, d, dtype=dtype),
            pbc=torch.zeros(b, d, dtype=torch.bool),
            energy=None if energy is None else torch.as_tensor(energy, dtype=dtype),
            forces=None if forces is None else torch.as_tensor(forces, dtype=dtype),
        )

    @classmethod
    def from_atoms(cls, atoms_list, dtype=torch.float64, labels: bool = True,
                   dim: int = 3) -> Batch:
        """Molecules or crystals from a list of ``ase.Atoms``.

        With ``labels`` the energy and forces attached to each Atoms (calculator results or
        extxyz fields) are read when every structure has them. ``dim`` < 3 reads toy points
        (one "atom" of number 0 whose first ``dim`` coordinates are the toy's variables, as
        :meth:`to_atoms` writes them); their cell is zero and not periodic.
        """
        atoms_list = list(atoms_list)
        if not atoms_list:
            raise StructureError("no structures given")
        if dim < 3:
            return _points_from_atoms(atoms_list, dim, dtype, labels)
        pos = np.concatenate([a.get_positions() for a in atoms_list])
        _check_finite(torch.as_tensor(pos), "positions")
        numbers = np.concatenate([a.numbers for a in atoms_list])
        if (numbers <= 0).any() or (numbers > 118).any():
            raise StructureError(f"unknown element with atomic number {numbers.min()}")
        sizes = [len(a) for a in atoms_list]
        energy = forces = None
        if labels:
            energies, forces_list = [], []
            for a in atoms_list:
                e, f = _read_labels(a)
                energies.append(e)
                forces_list.append(f)
            if all(e is not None for e in energies):
                energy = torch.tensor(energies, dtype=dtype)
            if all(f is not None for f in forces_list):
                forces = torch.as_tensor(np.concatenate(forces_list), dtype=dtype)
        fixed = np.zeros(len(numbers), dtype=bool)
        start = 0
        for a in atoms_list:
            for c in a.constraints:
                idx = getattr(c, "index", None)
                if idx is not None and type(c).__name__ == "FixAtoms":
                    fixed[start + np.asarray(idx)] = True
            start += len(a)
        return cls(
            positions=torch.as_tensor(pos, dtype=dtype),
            numbers=torch.as_tensor(numbers, dtype=torch.long),
            structure=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
            cell=torch.as_tensor(np.stack([a.cell.array for a in atoms_list]), dtype=dtype),
            pbc=torch.as_tensor(np.stack([a.pbc for a in atoms_list])),
            energy=energy,
            forces=forces,
            fixed=torch.as_tensor(fixed) if fixed.any() else None,
        )

    def to_atoms(self) -> list:
        """A list of ``ase.Atoms``; labels become a SinglePointCalculator.

        Toy points (d < 3) become one atom of number 0 with zero-padded 3D coordinates and
        forces and no cell; ``from_atoms(..., dim=d)`` reads them back.
        """
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        d = self.dim
        out = []
        off = self.offsets.tolist()
        positions = _pad3(self.positions.detach().cpu().numpy())
        forces = None if self.forces is None else _pad3(self.forces.detach().cpu().numpy())
        for i in range(self.n_structures):
            sl = slice(off[i], off[i + 1])
            atoms = Atoms(
                numbers=self.numbers[sl].cpu().numpy(),
                positions=positions[sl],
                cell=self.cell[i].detach().cpu().numpy() if d == 3 else None,
                pbc=self.pbc[i].cpu().numpy() if d == 3 else False,
            )
            if self.energy is not None:
                results = {"energy": float(self.energy[i])}
                if forces is not None:
                    results["forces"] = forces[sl]
                atoms.calc = SinglePointCalculator(atoms, **results)
            out.append(atoms)
        return out

    # ------------------------------------------------------------ operations
    def with_positions(self, positions: torch.Tensor) -> Batch:
        """Same structures at new positions [N, d]; labels are dropped (they no longer hold)."""
        return replace(self, positions=positions, energy=None, forces=None)

    def with_labels(self, energy: torch.Tensor, forces: torch.Tensor | None) -> Batch:
        """The same structures with labels energy [B] (eV) and forces [N, d] (eV/Å, or None)."""
        return replace(self, energy=energy, forces=forces)

    def without_labels(self) -> Batch:
        """The same structures without energy and force labels."""
        return replace(self, energy=None, forces=None)

    def select(self, index) -> Batch:
        """The structures at ``index`` (ints or bool mask over B, any device), in that order."""
        index = torch.as_tensor(index, device=self.device)
        if index.dtype == torch.bool:
            index = torch.nonzero(index).flatten()
        index = index.long().flatten()
        sizes = self.n_atoms[index]
        starts = self.offsets[index]
        first = torch.cumsum(sizes, 0) - sizes  # where each selected structure begins
        atom_idx = (torch.repeat_interleave(starts - first, sizes)
                    + torch.arange(int(sizes.sum()), device=self.device))
        return Batch(
            positions=self.positions[atom_idx],
            numbers=self.numbers[atom_idx],
            structure=torch.repeat_interleave(torch.arange(len(index), device=self.device), sizes),
            cell=self.cell[index],
            pbc=self.pbc[index],
            energy=None if self.energy is None else self.energy[index],
            forces=None if self.forces is None else self.forces[atom_idx],
            fixed=None if self.fixed is None else self.fixed[atom_idx],
        )

    def repeat(self, times: int) -> Batch:
        """Each structure ``times`` times in a row (restarts of the same seed)."""
        return self.select(torch.arange(self.n_structures, device=self.device)
                           .repeat_interleave(times))

    def to(self, dtype: torch.dtype | None = None, device=None) -> Batch:
        """A copy with floating-point fields cast to ``dtype`` (when given) and every field on
        ``device``.
        """
        def conv(name, t):
            """Field ``name`` moved to ``device`` (and floats to ``dtype``)."""
            if t is None:
                return None
            if t.is_floating_point():
                return t.to(dtype=dtype or t.dtype, device=device)
            return t.to(device=device)

        return Batch(**{f.name: conv(f.name, getattr(self, f.name)) for f in fields(self)})


def concatenate(batches: list[Batch]) -> Batch:
    """One batch holding the structures of all ``batches`` in order."""
    batches = [b for b in batches if b.n_structures]
    if not batches:
        raise StructureError("nothing to concatenate")
    shift = np.cumsum([0] + [b.n_structures for b in batches[:-1]])

    def cat(name):
        """Field ``name`` of every batch concatenated (None if some batch lacks it; a missing
        ``fixed`` mask is filled with False)."""
        vals = [getattr(b, name) for b in batches]
        if any(v is None for v in vals):
            if name == "fixed" and any(v is not None for v in vals):
                vals = [
                    torch.zeros(b.positions.shape[0], dtype=torch.bool, device=b.device)
                    if v is None else v
                    for b, v in zip(batches, vals)
                ]
            else:
                return None
        return torch.cat(vals)

    return Batch(
        positions=cat("positions"),
        numbers=cat("numbers"),
        structure=torch.cat([b.structure + int(s) for b, s in zip(batches, shift)]),
        cell=cat("cell"),
        pbc=cat("pbc"),
        energy=cat("energy"),
        forces=cat("forces"),
        fixed=cat("fixed"),
    )


def _pad3(x: np.ndarray) -> np.ndarray:
    """[N, d] -> [N, 3], zeros in the missing columns."""
    return np.pad(x, ((0, 0), (0, 3 - x.shape[1])))


def _points_from_atoms(atoms_list, dim: int, dtype, labels: bool) -> Batch:
    """Toy points written by :meth:`Batch.to_atoms`: one atom of number 0 each."""
    if any(len(a) != 1 or a.numbers[0] != 0 for a in atoms_list):
        raise StructureError(f"{dim}-dimensional toy structures must be one atom 'X' each")
    points = np.concatenate([a.get_positions()[:, :dim] for a in atoms_list])
    energy = forces = None
    if labels:
        pairs = [_read_labels(a) for a in atoms_list]
        if all(e is not None for e, _ in pairs):
            energy = [e for e, _ in pairs]
        if all(f is not None for _, f in pairs):
            forces = np.concatenate([np.asarray(f)[:, :dim] for _, f in pairs])
    return Batch.from_points(points, energy, forces, dtype=dtype)


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise StructureError(f"{what} contain NaN or infinite values")


def _read_labels(atoms):
    """(energy, forces) of an ase.Atoms from its calculator or info/arrays, else None."""
    energy = forces = None
    calc = atoms.calc
    if calc is not None:
        energy = calc.results.get("energy")
        forces = calc.results.get("forces")
    if energy is None:
        energy = atoms.info.get("energy")
    if forces is None:
        forces = atoms.arrays.get("forces")
    return energy, forces
