"""Coverage of collective variables (CVs) by the labelled structures.

A CV is given by atom indices within a structure: two atoms = a distance (Å), three = an
angle, four = a dihedral (degrees, −180..180). Periodic images are not considered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advsample.structures import Batch

DEFAULT_RANGE = {3: (0.0, 180.0), 4: (-180.0, 180.0)}


def collective_variable(batch: Batch, atoms: list[int]) -> torch.Tensor:
    """The CV of every structure [B]: distance (2 atoms, Å), angle or dihedral (3 or 4, deg)."""
    start = batch.offsets[:-1]
    p = [batch.positions[start + i] for i in atoms]  # each [B, 3]
    if len(atoms) == 2:
        return (p[1] - p[0]).norm(dim=1)
    if len(atoms) == 3:
        u, v = p[0] - p[1], p[2] - p[1]
        cos = (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1))
        return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    if len(atoms) == 4:
        b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
        b1n = b1 / b1.norm(dim=1, keepdim=True)
        v = b0 - (b0 * b1n).sum(1, keepdim=True) * b1n
        w = b2 - (b2 * b1n).sum(1, keepdim=True) * b1n
        x = (v * w).sum(1)
        y = (torch.cross(b1n, v, dim=1) * w).sum(1)
        return torch.rad2deg(torch.atan2(y, x))
    raise ValueError(f"a collective variable needs 2, 3 or 4 atoms, got {atoms}")


@dataclass
class CoverageEvaluator:
    """Which cells of a grid over 1 or 2 CVs hold labelled structures.

    cvs: atom indices of each CV; bins: cells per CV; ranges: (lo, hi) per CV (angles and
    dihedrals default to their full range; distances need one). Metrics: occupied cells,
    their fraction, cells first reached in this generation, and every labelled structure's
    CV values and generation (for the report's map).
    """

    cvs: list
    name: str = "coverage"
    bins: int = 24
    ranges: list | None = None
    type: str = "coverage"

    def __post_init__(self):
        if not 1 <= len(self.cvs) <= 2:
            raise ValueError("coverage takes one or two collective variables")
        ranges = self.ranges or [DEFAULT_RANGE.get(len(cv)) for cv in self.cvs]
        if any(r is None for r in ranges) or len(ranges) != len(self.cvs):
            raise ValueError("coverage: give 'ranges' for every distance CV")
        self.ranges = [tuple(map(float, r)) for r in ranges]

    def evaluate(self, context) -> dict:
        """Coverage metrics of ``context`` (``loop.EvaluationContext``): occupied cells, total
        cells, their fraction, cells first reached in this generation, and every training
        structure's CV values [K, n_cv] (Å or degrees) and generation [K].
        """
        values = np.stack([collective_variable(context.training, cv).detach().cpu().numpy()
                           for cv in self.cvs], axis=1)  # [K, n_cv]
        cells = self.cells(values)
        gens = context.training_generation
        before = {c for c, g in zip(cells, gens, strict=True) if g < context.generation}
        occupied = set(cells)
        total = self.bins ** len(self.cvs)
        return {"type": self.type, "occupied": len(occupied), "cells": total,
                "fraction": len(occupied) / total, "new_cells": len(occupied - before),
                "ranges": self.ranges, "bins": self.bins,
                "values": values.tolist(), "generation": gens.tolist()}

    def cells(self, values: np.ndarray) -> list[tuple]:
        """Grid cell (tuple of bin indices) of each row of CV values [K, n_cv]; values
        outside the ranges are clipped into the edge cells."""
        idx = []
        for k, (lo, hi) in enumerate(self.ranges):
            b = np.floor((values[:, k] - lo) / (hi - lo) * self.bins).astype(int)
            idx.append(np.clip(b, 0, self.bins - 1))
        return [tuple(row) for row in np.stack(idx, axis=1).tolist()]


def plot(entries: list[tuple[int, dict]], ax_map, ax_curve) -> None:
    """Labelled structures on the CV grid coloured by generation; occupied cells per
    generation."""
    last = entries[-1][1]
    values = np.array(last["values"])
    gens = np.array(last["generation"])
    if values.shape[1] == 2:
        sc = ax_map.scatter(values[:, 0], values[:, 1], c=gens, cmap="viridis", s=10)
        ax_map.set_ylim(*last["ranges"][1])
        ax_map.set_ylabel("CV 2")
    else:
        sc = ax_map.scatter(values[:, 0], gens, c=gens, cmap="viridis", s=10)
        ax_map.set_ylabel("generation")
    ax_map.set_xlim(*last["ranges"][0])
    ax_map.set_xlabel("CV 1")
    ax_map.figure.colorbar(sc, ax=ax_map, label="generation")
    ax_curve.plot([g for g, _ in entries], [m["occupied"] for _, m in entries], "o-")
    ax_curve.set_xlabel("generation")
    ax_curve.set_ylabel(f"occupied cells of {last['cells']}")
