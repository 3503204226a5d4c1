"""An ASE calculator that keeps every result on disk, so a deterministic procedure that was
killed (a relaxation, say) can be re-run from its start without calling the oracle again for
a geometry it already computed: known geometries are answered from the file.

The file is append-only: one pickled record (key, energy, forces) per oracle call, flushed as
soon as the call returns; a record cut short by a kill is ignored when the file is read back.
Keys are exact (a hash of the positions, numbers and cell bytes), which is what a replay of
a deterministic procedure produces.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes


def geometry_key(atoms: Atoms) -> str:
    """Exact identity of a structure: sha1 of its positions, atomic numbers, cell and pbc."""
    digest = hashlib.sha1()
    for array in (atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class ReplayCalculator(Calculator):
    """Energy (eV) and forces [n, 3] (eV/Å) from ``inner``, remembered in the file ``path``.

    A geometry found in the file is answered from it; any other is computed by ``inner`` (raw
    forces, no constraint applied) and, when ``record``, appended to the file.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, inner: Calculator, path: str | os.PathLike, record: bool = True):
        super().__init__()
        self.inner, self.path, self.record = inner, Path(path), record
        self.known: dict[str, tuple[float, np.ndarray]] = {}
        if self.path.exists():
            with open(self.path, "rb") as handle:
                while True:
                    try:
                        key, energy, forces = pickle.load(handle)
                    except (EOFError, pickle.UnpicklingError, ValueError, TypeError):
                        break  # the end, or a record cut short by a kill
                    self.known[key] = energy, forces

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Answer from the file, or compute with the inner calculator and remember."""
        super().calculate(atoms, properties, system_changes)
        key = geometry_key(self.atoms)
        if key not in self.known:
            work = self.atoms.copy()
            work.calc = self.inner
            energy = float(work.get_potential_energy())
            forces = np.array(work.get_forces(apply_constraint=False), dtype=float)
            if self.record:
                with open(self.path, "ab") as handle:
                    pickle.dump((key, energy, forces), handle)
            self.known[key] = energy, forces
        energy, forces = self.known[key]
        self.results = {"energy": energy, "forces": forces.copy()}
