"""Energy error of the committee on a regular grid over a toy surface's box."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from advsample.structures import Batch


@dataclass
class GridEvaluator:
    """RMSE of the committee-mean energy on ``resolution``^d grid points of an analytic
    surface (``surface``: ``grid(resolution)`` and ``energy(x)``, see
    ``advsample.oracles.analytic``), overall and where the true energy is below
    ``low_below``."""

    surface: object
    name: str = "grid"
    resolution: int = 100
    low_below: float = 0.0
    type: str = "grid"
    _truth: tuple | None = field(default=None, repr=False)

    def evaluate(self, context) -> dict:
        """RMSE of the committee-mean energy against the surface on the grid (energy units of the
        surface): everywhere ("rmse_grid") and where the true energy is below ``low_below``
        ("rmse_low"). The true energies are computed once and cached.
        """
        if self._truth is None:
            grid = self.surface.grid(self.resolution)
            self._truth = (grid, self.surface.energy(grid))
        grid, truth = self._truth
        batch = Batch.from_points(grid, dtype=context.training.dtype).to(device=context.device)
        with torch.no_grad():
            pred = context.committee(batch, forces=False).mean_energy.cpu().numpy()
        err = pred - truth
        low = truth < self.low_below
        return {"type": self.type, "rmse_grid": float(np.sqrt(np.mean(err**2))),
                "rmse_low": float(np.sqrt(np.mean(err[low] ** 2))) if low.any() else None}


def plot(entries: list[tuple[int, dict]], ax) -> None:
    """Grid RMSE per generation (log scale)."""
    gens = [g for g, _ in entries]
    ax.semilogy(gens, [m["rmse_grid"] for _, m in entries], "o-", label="whole box")
    ax.semilogy(gens, [m["rmse_low"] for _, m in entries], "s-", label="low-energy region")
    ax.set_xlabel("generation")
    ax.set_ylabel("energy RMSE on the grid")
    ax.legend(fontsize=7)
