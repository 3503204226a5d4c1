"""Checks on lists of ``ase.Atoms`` before they enter a store or a training set.

Every problem is raised as one :class:`~advsample.structures.StructureError` line that names
the source, the frame (0-based) and the problem, so users can fix their input file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list

from advsample.structures import StructureError

MIN_DISTANCE = 0.5  # Å: atoms closer than this are overlapping
MAX_ATOMIC_NUMBER = len(chemical_symbols) - 1


def attached_labels(atoms: Atoms) -> tuple[float | None, np.ndarray | None]:
    """(energy (eV), forces [n, 3] (eV/Å)) stored on ``atoms``' calculator, None if absent.

    Only stored results are read (an extxyz file's labels land there); nothing is computed.
    """
    results = getattr(atoms.calc, "results", None) or {}
    energy = results.get("energy")
    forces = results.get("forces")
    return (
        None if energy is None else float(energy),
        None if forces is None else np.asarray(forces, dtype=float),
    )


def validate_atoms(atoms_list: Sequence[Atoms], source: str, require_labels: bool) -> None:
    """Raise StructureError on the first bad structure of ``atoms_list``.

    Checks: at least one structure; each has atoms, known elements (atomic numbers 1-118),
    finite coordinates and cell, a non-zero cell vector along every periodic direction, no two
    atoms (or periodic images) closer than ``MIN_DISTANCE``; labels (energy and forces [n, 3],
    finite) are required when ``require_labels``, and a structure that has an energy must also
    have forces.
    """
    if len(atoms_list) == 0:
        raise StructureError(f"{source}: contains no structures")
    for i, atoms in enumerate(atoms_list):
        problem = _structure_problem(atoms) or _label_problem(atoms, require_labels)
        if problem:
            raise StructureError(f"{source}: frame {i}: {problem}")


def _structure_problem(atoms: Atoms) -> str | None:
    n = len(atoms)
    if n == 0:
        return "has no atoms"
    bad = (atoms.numbers < 1) | (atoms.numbers > MAX_ATOMIC_NUMBER)
    if bad.any():
        k = int(np.argmax(bad))
        return f"atom {k} has unknown element (atomic number {atoms.numbers[k]})"
    if not np.isfinite(atoms.positions).all():
        return "coordinates contain NaN or infinite values"
    if not np.isfinite(atoms.cell.array).all():
        return "cell contains NaN or infinite values"
    for axis in np.flatnonzero(atoms.pbc):
        if np.linalg.norm(atoms.cell.array[axis]) == 0:
            return f"periodic along axis {axis} but its cell vector is zero"
    i, j, d = neighbor_list("ijd", atoms, MIN_DISTANCE)
    if len(d):
        k = int(np.argmin(d))
        return (
            f"atoms {i[k]} and {j[k]} are {d[k]:.3f} Å apart "
            f"(overlapping, minimum {MIN_DISTANCE} Å)"
        )
    return None


def _label_problem(atoms: Atoms, require_labels: bool) -> str | None:
    energy, forces = attached_labels(atoms)
    if energy is None:
        return "has no energy (labels are required)" if require_labels else None
    if not np.isfinite(energy):
        return f"energy is {energy}"
    if forces is None:
        return "has an energy but no forces"
    if forces.shape != (len(atoms), 3):
        return f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)"
    if not np.isfinite(forces).all():
        return "forces contain NaN or infinite values"
    return None
