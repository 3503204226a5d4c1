"""Energies of the committee along a path of structures (a reaction or inversion path).

The path comes with oracle energies: from an extxyz file, or made once by a generator
(:data:`GENERATORS`) with the oracle and cached in the run directory. Energies are relative
to the path's first structure; the barrier is the highest energy along the path above that
first structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from advsample.evaluators.predictions import predict
from advsample.structures import Batch


def barrier(energies: np.ndarray) -> float:
    """Highest energy along a path above its first point (eV)."""
    e = np.asarray(energies, dtype=float)
    return float(e.max() - e[0])


@dataclass
class PathEvaluator:
    """Committee-mean energies along ``structures`` (ase.Atoms with oracle energies).

    ``coordinate`` [P] is the x axis of the plot (e.g. the umbrella coordinate, Å); by
    default the path index. Metrics: energies and σ²_F along the path, the barrier, its
    error against the oracle's, and the RMSE of the relative energies (eV).
    """

    structures: list
    name: str = "path"
    coordinate: list | None = None
    coordinate_label: str = "path index"
    type: str = "path"

    def evaluate(self, context) -> dict:
        """Committee-mean energies [P] (eV) relative to the path's first structure, σ²_F [P]
        ((eV/Å)², mean over atoms), the oracle's relative energies, both barriers and the barrier
        error (eV), and the RMSE of the relative energies (eV).
        """
        data = Batch.from_atoms(self.structures).to(device=context.device)
        pred = predict(context.committee, data)
        e = pred.energy - pred.energy[0]
        ref = data.energy.cpu().numpy()
        ref = ref - ref[0]
        b, b_ref = barrier(e), barrier(ref)
        return {"type": self.type, "energy": e.tolist(), "reference": ref.tolist(),
                "force_variance": pred.variance.tolist(),
                "coordinate": self.coordinate or list(range(len(e))),
                "coordinate_label": self.coordinate_label,
                "barrier": b, "barrier_reference": b_ref, "barrier_error": b - b_ref,
                "abs_barrier_error": abs(b - b_ref),
                "energy_rmse": float(np.sqrt(np.mean((e - ref) ** 2)))}


def umbrella_inversion(atoms: Atoms, oracle, points: int = 21) -> tuple[list[Atoms], list]:
    """NH3-like inversion: the oracle's relaxed pyramidal minimum through its relaxed planar
    transition state to the mirror minimum (``points`` geometries, centre atom first), and
    the umbrella coordinate h (Å) of each."""
    from advsample.initial_data import relaxed
    from advsample.umbrella import inversion_path, umbrella_coordinate

    calc = oracle.calculator()
    minimum = relaxed(atoms, calc)
    p = minimum.positions
    normal = np.cross(p[2] - p[1], p[3] - p[1])
    planar = minimum.copy()
    planar.positions[0] -= umbrella_coordinate(p) * normal / np.linalg.norm(normal)
    planar = relaxed(planar, calc)
    path = inversion_path(minimum, planar, points)
    return path, [float(umbrella_coordinate(a.positions)) for a in path]


GENERATORS = {"umbrella_inversion": umbrella_inversion}
COORDINATE_LABELS = {"umbrella_inversion": "umbrella coordinate h (Å)"}  # plot axes


def generated_path(generator: str, atoms: Atoms, oracle, cache: Path | None,
                   points: int = 21) -> tuple[list[Atoms], list]:
    """A generated path labelled by the oracle, read from ``cache`` (extxyz) when present.

    Returns the labelled structures and their coordinate. A failed oracle call raises: the
    path is the run's yardstick and cannot have holes.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown path generator {generator!r}; known: {sorted(GENERATORS)}")
    if cache is not None and cache.exists():
        frames = ase.io.read(cache, index=":", format="extxyz")
        return frames, [float(a.info["coordinate"]) for a in frames]
    path, coordinate = GENERATORS[generator](atoms, oracle, points)
    for a, x in zip(path, coordinate, strict=True):
        result = oracle.label(a)
        if not result.ok:
            raise ValueError(f"path generator {generator}: oracle failed ({result.message})")
        a.calc = SinglePointCalculator(a, energy=result.energy, forces=result.forces)
        a.info["coordinate"] = x
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.extxyz")
        ase.io.write(tmp, path, format="extxyz")
        tmp.replace(cache)
    return path, coordinate


def plot(entries: list[tuple[int, dict]], ax_path, ax_barrier) -> None:
    """Committee energy along the path per generation against the oracle; barrier error."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    last_g, last = entries[-1]
    ax_path.plot(last["coordinate"], last["reference"], "k-", lw=3, label="oracle")
    for g, m in entries:
        ax_path.plot(m["coordinate"], m["energy"], color=cmap(g / max(1, last_g)),
                     label=f"generation {g}")
    ax_path.set_xlabel(last["coordinate_label"])
    ax_path.set_ylabel("energy above the first point (eV)")
    ax_path.legend(fontsize=7)
    ax_barrier.plot([g for g, _ in entries], [m["barrier_error"] for _, m in entries], "o-")
    ax_barrier.axhline(0, color="k", lw=0.5)
    ax_barrier.set_xlabel("generation")
    ax_barrier.set_ylabel("barrier error (eV)")
    ax_barrier.set_title(f"oracle barrier {last['barrier_reference']:.4f} eV", fontsize=9)
