"""NN-MD stability of the committee: the fraction of runs that stay physical."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np

from advsample.stability import stability_test
from advsample.structures import Batch


@dataclass
class StabilityEvaluator:
    """Langevin NN-MD on the committee mean from ``starts`` (ase.Atoms; None: the first
    structure of the initial data), ``runs`` runs per start of ``steps`` × ``timestep_fs`` fs
    at ``temperature_K``; a run fails on a close contact (< ``floor`` Å), a starting bond
    (closer than ``bond_tolerance`` × the sum of covalent radii at the start) stretched past
    ``bond_ceiling`` × its length, or a non-finite value (see
    ``advsample.stability``). Metrics: fraction stable, counts per failure reason and per
    culprit (e.g. "bond broken C-H"), median time to failure of the failed runs (fs). The
    failed runs' geometries at failure go to ``<name>_failures.extxyz`` in the generation's
    directory (with a run directory). ``parallel``: the runs in chunks on the context's
    executor's workers (see ``stability_test``)."""

    starts: list | None = None
    name: str = "stability"
    temperature_K: float = 300.0
    runs: int = 16
    steps: int = 2000
    timestep_fs: float = 0.5
    floor: float = 0.5
    bond_ceiling: float = 1.5
    bond_tolerance: float = 1.2
    friction_per_fs: float = 0.01
    seed: int = 0
    progress: bool = False
    parallel: bool = False
    type: str = "stability"

    def evaluate(self, context) -> dict:
        """Run :func:`advsample.stability.stability_test` on ``context.committee``: fraction stable,
        number of runs, duration (fs), temperature (K), counts per failure reason and per
        reason and culprit, the median time to failure of the failed runs (fs; None when none
        failed) and the fraction stable of each start's runs (list, the starts' order).
        Writes the failed runs' last geometries (see the class) when any failed.
        """
        if self.starts is not None:
            starts = Batch.from_atoms(self.starts, labels=False)
        else:
            first = int(np.flatnonzero(context.training_generation == 0)[0])
            starts = context.training.select([first])
        result = stability_test(context.committee, starts.to(device=context.device),
                                self.temperature_K, self.steps, self.timestep_fs,
                                floor=self.floor, bond_ceiling=self.bond_ceiling,
                                bond_tolerance=self.bond_tolerance,
                                runs_per_start=self.runs, seed=self.seed,
                                friction_per_fs=self.friction_per_fs, progress=self.progress,
                                executor=context.executor if self.parallel else None)
        failed = result.time_to_failure_fs[~result.stable]
        summary = result.as_dict()
        if result.failed_frames and context.output_dir is not None:
            write_frames(context.output_dir / f"{self.name}_failures.extxyz",
                         result.failed_frames)
        return {"type": self.type, "fraction_stable": result.fraction_stable,
                "runs": summary["runs"], "duration_fs": result.duration_fs,
                "temperature_K": result.temperature_K, "counts": summary["counts"],
                "failures_by_culprit": result.failures_by_culprit,
                "median_time_to_failure_fs": float(np.median(failed)) if len(failed)
                else None, "fraction_stable_per_start": result.fraction_stable_per_start}


def write_frames(path: Path, frames: list) -> None:
    """``frames`` (ase.Atoms) to extxyz at ``path``, whole or not at all (a temporary file
    renamed into place); ``info`` values that are None or lists are written as text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.info = {k: v if isinstance(v, int | float | str) else json.dumps(v)
                      for k, v in atoms.info.items()}
        out.append(atoms)
    tmp = path.with_suffix(".tmp")
    ase.io.write(tmp, out, format="extxyz")
    tmp.replace(path)


def plot(entries: list[tuple[int, dict]], ax) -> None:
    """Fraction of stable NN-MD runs per generation."""
    ax.plot([g for g, _ in entries], [m["fraction_stable"] for _, m in entries], "o-")
    last = entries[-1][1]
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("generation")
    ax.set_ylabel("fraction of stable runs")
    ax.set_title(f"NN-MD stability: {last['runs']} runs × {last['duration_fs']:.0f} fs at "
                 f"{last['temperature_K']:.0f} K", fontsize=9)
