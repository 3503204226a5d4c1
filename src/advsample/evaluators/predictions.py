"""Committee predictions over many structures in chunks: what every evaluator starts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advsample.committee import Committee
from advsample.structures import Batch
from advsample.uncertainty import atom_force_variance, reduce_atoms


@dataclass
class Predictions:
    """Committee-mean energy [B] (eV), forces [N, d] (eV/Å), σ²_F [B] ((eV/Å)², reduced over
    atoms as asked) and per-atom σ²_i [N], as numpy arrays."""

    energy: np.ndarray
    forces: np.ndarray
    variance: np.ndarray
    atom_variance: np.ndarray


def predict(committee: Committee, batch: Batch, reduce: str = "mean",
            chunk: int = 512) -> Predictions:
    """Predictions of ``committee`` on every structure of ``batch`` (``chunk`` at a time)."""
    committee.eval()
    parts = []
    for start in range(0, batch.n_structures, chunk):
        index = torch.arange(start, min(start + chunk, batch.n_structures))
        part = batch.select(index).without_labels()
        out = committee(part)
        per_atom = atom_force_variance(out.forces.detach())
        parts.append((out.mean_energy.detach(), out.mean_forces.detach(), per_atom,
                      reduce_atoms(per_atom, part.structure, part.n_structures, reduce)))
    energy, forces, atom_var, var = (torch.cat(c).cpu().numpy() for c in zip(*parts))
    return Predictions(energy, forces, var, atom_var)
