"""Labels that are computed but physically absurd: stored as "rejected", kept out of training.

An oracle can return numbers that are finite yet useless: forces of hundreds of eV/Å from
two atoms pushed into each other, an energy far above anything the potential is meant to
describe, or a result the code itself warned about (an SCF that stopped before converging).
One such label can wreck the next committee, so the loop screens each fresh label: a
rejected one keeps its numbers in the store (for inspection) with status "rejected" and the
reason, never enters training, and is counted in metrics and the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms

if TYPE_CHECKING:  # the loop's core imports this module, and no oracle
    from advsample.oracles.base import LabelResult


@dataclass(frozen=True)
class LabelScreen:
    """When a finite label is rejected (any limit None is not checked).

    max_force:        largest allowed force component norm on any atom (eV/Å)
    max_energy_above: largest allowed energy per atom above the highest per-atom energy of
                      the training structures of the same formula (eV/atom); structures of
                      a formula not in training are not checked
    warning_words:    a warning of the oracle containing one of these (case-insensitive)
                      rejects the label
    """

    max_force: float | None = 100.0
    max_energy_above: float | None = 2.0
    warning_words: tuple[str, ...] = ("converge",)

    def __call__(self, result: LabelResult, atoms: Atoms,
                 ceilings: dict[str, float]) -> LabelResult:
        """``result`` of labelling ``atoms``, its status "rejected" with the reason if a limit
        is broken; ``ceilings``: formula -> highest training energy per atom (eV/atom)."""
        if not result.ok:
            return result
        reason = self.reason(result, atoms, ceilings)
        return result if reason is None else replace(result, status="rejected", message=reason)

    def reason(self, result: LabelResult, atoms: Atoms,
               ceilings: dict[str, float]) -> str | None:
        """Why the ok ``result`` of ``atoms`` is rejected (one line), or None."""
        largest = float(np.linalg.norm(result.forces, axis=1).max())
        if self.max_force is not None and largest > self.max_force:
            return f"rejected: force {largest:.4g} eV/Å above the limit {self.max_force:g}"
        formula = atoms.get_chemical_formula()
        if self.max_energy_above is not None and formula in ceilings:
            above = result.energy / len(atoms) - ceilings[formula]
            if above > self.max_energy_above:
                return (f"rejected: energy {above:.4g} eV/atom above the highest training "
                        f"{formula} (limit {self.max_energy_above:g})")
        for text in result.warnings:
            if any(word.lower() in text.lower() for word in self.warning_words):
                return f"rejected: the oracle warned: {text}"
        return None


def energy_ceilings(training: Iterable[Atoms]) -> dict[str, float]:
    """formula -> highest energy per atom (eV/atom) among labelled structures."""
    out: dict[str, float] = {}
    for atoms in training:
        formula = atoms.get_chemical_formula()
        per_atom = atoms.get_potential_energy() / len(atoms)
        out[formula] = max(out.get(formula, -np.inf), per_atom)
    return out
