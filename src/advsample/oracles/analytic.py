"""Analytic potential-energy surfaces used as ground truth for the toy benchmarks.

Each surface evaluates many points at once: ``evaluate(x [B, d]) -> (energy [B], forces [B, d])``
and ``label(batch)`` returns the batch with these labels attached (one point per structure).
:class:`AnalyticOracle` makes a surface an ordinary oracle of the active-learning loop: a toy
point is stored as one atom "X" (number 0) whose first d coordinates are the variables
(see ``Batch.to_atoms``), and the surface is its ASE calculator.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from advsample.oracles.base import Oracle
from advsample.structures import Batch


class AnalyticSurface:
    """A d-dimensional surface on a square box [lo, hi]^d; subclasses give energy and forces."""

    name = "analytic"
    dim = 1

    def __init__(self, box: tuple[float, float] = (-1.2, 1.2)):
        self.box = (float(box[0]), float(box[1]))

    def energy(self, x: np.ndarray) -> np.ndarray:
        """x [B, d] -> E [B]."""
        raise TypeError(f"{type(self).__name__} defines no energy")

    def forces(self, x: np.ndarray) -> np.ndarray:
        """x [B, d] -> F = −∇E [B, d]."""
        raise TypeError(f"{type(self).__name__} defines no forces")

    def evaluate(self, x) -> tuple[np.ndarray, np.ndarray]:
        """x [B, d] -> (E [B], F = −∇E [B, d]) as numpy arrays."""
        x = np.asarray(x, dtype=float)
        return self.energy(x), self.forces(x)

    def label(self, batch: Batch) -> Batch:
        """``batch`` (one point per structure, positions [B, d]) with the surface's energies [B] and
        forces [B, d] attached as labels.
        """
        e, f = self.evaluate(batch.positions.detach().cpu().numpy())
        return batch.with_labels(torch.as_tensor(e, dtype=batch.dtype),
                                 torch.as_tensor(f, dtype=batch.dtype))

    def uniform_points(self, n: int, energy_max: float | None = None, seed: int = 0) -> Batch:
        """``n`` uniform points in the box, labelled, keeping those with energy below
        ``energy_max`` (all when None)."""
        x = np.random.default_rng(seed).uniform(*self.box, size=(n, self.dim))
        if energy_max is not None:
            x = x[self.energy(x) < energy_max]
        return self.label(Batch.from_points(x))

    def grid(self, resolution: int) -> np.ndarray:
        """A regular grid over the box, [resolution**d, d]."""
        axes = np.meshgrid(*[np.linspace(*self.box, resolution)] * self.dim, indexing="xy")
        return np.stack([a.ravel() for a in axes], axis=1)

    def max_energy_in_box(self) -> float:
        """Highest true energy on the box (fine grid; both surfaces peak at a corner)."""
        return float(self.energy(self.grid(401 if self.dim == 2 else 4001)).max())


class DoubleWell2D(AnalyticSurface):
    """E(x, y) = 10x⁴ − 10x² + 2x + 4y⁴ (METHOD.md section 7).

    Deep well at x ≈ −0.75 (E ≈ −3.96), shallow well at x ≈ 0.651 (E ≈ −1.14), barrier near
    x ≈ 0.1 (E ≈ 0.1).
    """

    name = "double_well_2d"
    dim = 2

    def energy(self, x):
        """x [B, 2] -> E [B]."""
        return 10 * x[:, 0] ** 4 - 10 * x[:, 0] ** 2 + 2 * x[:, 0] + 4 * x[:, 1] ** 4

    def forces(self, x):
        """x [B, 2] -> F = −∇E [B, 2]."""
        return -np.stack([40 * x[:, 0] ** 3 - 20 * x[:, 0] + 2, 16 * x[:, 1] ** 3], axis=1)


class DoubleWell1D(AnalyticSurface):
    """E(x) = 10x⁴ − 10x² + 2x: the 2D surface without its y term."""

    name = "double_well_1d"
    dim = 1

    def energy(self, x):
        """x [B, 1] -> E [B]."""
        return 10 * x[:, 0] ** 4 - 10 * x[:, 0] ** 2 + 2 * x[:, 0]

    def forces(self, x):
        """x [B, 1] -> F = −∇E [B, 1]."""
        return -(40 * x[:, 0] ** 3 - 20 * x[:, 0] + 2)[:, None]


SURFACES = {s.name: s for s in (DoubleWell2D, DoubleWell1D)}


class SurfaceCalculator(Calculator):
    """An analytic surface as an ASE calculator on toy points (atoms "X", first d coordinates).

    Energy in the surface's units; forces [n, 3] with zeros beyond the d-th coordinate.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, surface: AnalyticSurface, **kwargs):
        super().__init__(**kwargs)
        self.surface = surface

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Energy (sum over the atoms' points) and forces [n, 3] of ``atoms`` from the surface."""
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions[:, : self.surface.dim]
        energy, forces = self.surface.evaluate(x)
        self.results["energy"] = float(energy.sum())
        self.results["forces"] = np.pad(forces, ((0, 0), (0, 3 - self.surface.dim)))


class AnalyticOracle(Oracle):
    """Ground truth from an analytic surface by name (``SURFACES``), e.g. "double_well_2d"."""

    def __init__(self, surface: str = "double_well_2d", box: tuple[float, float] | None = None):
        if surface not in SURFACES:
            raise ValueError(f"unknown analytic surface {surface!r}; known: {sorted(SURFACES)}")
        self.surface = SURFACES[surface]() if box is None else SURFACES[surface](box)
        self.name = surface
        self.settings = {"type": "analytic", "surface": surface, "box": list(self.surface.box)}

    @property
    def dim(self) -> int:
        """Number of coordinates of a toy point."""
        return self.surface.dim

    def calculator(self) -> SurfaceCalculator:
        """A new :class:`SurfaceCalculator` on this oracle's surface."""
        return SurfaceCalculator(self.surface)
