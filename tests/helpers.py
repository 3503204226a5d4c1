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


class ElasticNetwork(torch.nn.Module):
    """NH3 as springs: E = ½ k Σ_{i<j} (d_ij − d⁰_ij)² (eV; k in eV/Å²) over the 6 pairs of
    structures that are all NH3, d⁰ those of the relaxed molecule: harmonic about it with 6
    internal modes, twice differentiable (attacks differentiate its forces)."""

    def __init__(self, k: float):
        super().__init__()
        self.k = k
        self.i, self.j = torch.triu_indices(4, 4, 1)
        self.register_buffer("d0", self.distances(
            torch.as_tensor(molecule("NH3").positions)[None]))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 6] pair distances (Å) of [B, 4, 3] positions."""
        return (x[:, self.j] - x[:, self.i]).norm(dim=-1)

    def forward(self, batch) -> torch.Tensor:
        """Energies [B] (eV) of a Batch of NH3 structures."""
        stretch = self.distances(batch.positions.view(-1, 4, 3)) - self.d0
        return 0.5 * self.k * stretch.pow(2).sum(1)
