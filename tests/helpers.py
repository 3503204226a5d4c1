"""What several test modules share: tolerances and small labelled data sets."""

import numpy as np
import torch
from ase.build import molecule
from ase.calculators.emt import EMT

FD_TOL = {torch.float64: 1e-6, torch.float32: 1e-3}
"""Tolerances by dtype for comparisons with finite differences."""


def labelled_nh3(n: int, seed: int = 0) -> list:
    """n rattled NH3 (0.05 Å) labelled by EMT (energy eV, forces eV/Å)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = molecule("NH3")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        a.get_forces()
        frames.append(a)
    return frames
