"""MD stability of a committee: do its NN-MD trajectories stay physical?

Every start structure is run ``runs_per_start`` times (different Maxwell-Boltzmann momenta
and noise) with Langevin dynamics on the committee mean forces, all runs as one batch. A run
fails at the first step (0 = the start) where, checked in this order,

- "non-finite energy": the energy, a force or a position is NaN or infinite;
- "close contact": two atoms are closer than ``floor`` (Å);
- "bond broken": a bond of the starting connectivity is longer than ``bond_ceiling`` times
  its start length. Two atoms are bonded at the start if closer than ``bond_tolerance``
  (default 1.2) times the sum of their covalent radii (ase.neighborlist.natural_cutoffs):
  the plain sum misses most bonds to hydrogen (N-H 1.03 Å against 1.02 Å, C-H 1.09 Å
  against 1.07 Å), so a run could lose every H unnoticed.

A failed run leaves the batch, so later steps cost only the runs still alive; each run
draws its own noise whatever the others do, so its fate does not depend on theirs. With an
executor of W workers the runs go out in W contiguous chunks at once (:mod:`advsample.chunks`
for their seeds) and come back in run order. Each
failure names its culprit, the pair of atoms that failed the check (the most stretched
starting bond, or the closest pair), and keeps the geometry it failed at: where a potential
breaks is what its next labels should fix.
The fraction of runs that survive all steps is the paper's MD-stability measure.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from ase import Atoms
from ase.data import covalent_radii

from advsample.chunks import chunk_seed, chunks
from advsample.committee import Committee
from advsample.dynamics import (
    committee_forces,
    init_state,
    langevin_step,
    standard_normal,
)
from advsample.geometry import intra_structure_pairs, min_interatomic_distance
from advsample.progress import progress_bar
from advsample.structures import Batch

REASONS = ("ok", "non-finite energy", "close contact", "bond broken")
BOND_TOLERANCE = 1.2  # bonded: closer than this times the sum of covalent radii


@dataclass
class StabilityResult:
    """Outcome of every run (R = starts × runs_per_start, start-major as Batch.repeat).

    time_to_failure_fs: [R] time of the failing step (fs), NaN for runs that survived;
    reason: [R] one of REASONS; start: [R] index of the run's start structure;
    duration_fs: length of a full run (fs); temperature_K: thermostat temperature (K);
    culprit: [R] the failing pair's elements, heavier first ("C-H"; "" for a run that
    survived or failed on a non-finite value); failed_frames: the geometry of each failed
    run at its failing step (ase.Atoms, run order), ``info`` holding run, start, reason,
    time_fs, culprit and pair (its two atom indices, or None).
    """

    time_to_failure_fs: np.ndarray
    reason: list[str]
    start: np.ndarray
    duration_fs: float
    temperature_K: float
    culprit: list[str] = field(default_factory=list)
    failed_frames: list = field(default_factory=list)

    @property
    def stable(self) -> np.ndarray:
        """bool [R]: runs that survived the whole duration."""
        return np.array([r == "ok" for r in self.reason], dtype=bool)

    @property
    def fraction_stable(self) -> float:
        """Fraction of runs that survived (NaN without runs)."""
        return float(self.stable.mean()) if len(self.reason) else math.nan

    @property
    def fraction_stable_per_start(self) -> list[float]:
        """Fraction of the runs from each start that survived [S], start index order (which
        starting structures the committee fails on)."""
        if not len(self.reason):
            return []
        starts = np.bincount(self.start)
        return (np.bincount(self.start, self.stable) / np.maximum(starts, 1)).tolist()

    @property
    def failures_by_culprit(self) -> dict[str, int]:
        """Failed runs per reason and culprit, e.g. {"bond broken C-H": 3,
        "non-finite energy": 1}, most frequent first."""
        keys = [f"{r} {c}".strip() for r, c in zip(self.reason, self.culprit, strict=True)
                if r != "ok"]
        return dict(Counter(keys).most_common())

    @classmethod
    def concat(cls, parts: list[StabilityResult], first_runs: list[int]) -> StabilityResult:
        """The results of consecutive chunks of runs as one, in run order; ``first_runs``:
        the index of each chunk's first run (the failed frames' ``run`` is renumbered)."""
        frames = []
        for part, first in zip(parts, first_runs, strict=True):
            for atoms in part.failed_frames:
                atoms = atoms.copy()
                atoms.info["run"] = int(atoms.info["run"]) + int(first)
                frames.append(atoms)
        return cls(time_to_failure_fs=np.concatenate([p.time_to_failure_fs for p in parts]),
                   reason=[r for p in parts for r in p.reason],
                   start=np.concatenate([p.start for p in parts]),
                   duration_fs=parts[0].duration_fs, temperature_K=parts[0].temperature_K,
                   culprit=[c for p in parts for c in p.culprit], failed_frames=frames)

    def as_dict(self) -> dict:
        """Plain numbers and lists (JSON-ready; survivors' times are None)."""
        return {
            "fraction_stable": self.fraction_stable,
            "runs": len(self.reason),
            "duration_fs": self.duration_fs,
            "temperature_K": self.temperature_K,
            "counts": {r: self.reason.count(r) for r in REASONS},
            "time_to_failure_fs": [None if math.isnan(t) else float(t)
                                   for t in self.time_to_failure_fs],
            "reason": list(self.reason),
            "start": self.start.tolist(),
            "culprit": list(self.culprit),
            "failures_by_culprit": self.failures_by_culprit,
        }


class Bonds(NamedTuple):
    """Bonds i–j: atoms i, j long [P], j seen through the lattice vector shift [P, 3] (Å);
    length [P] is the start length (Å)."""

    i: torch.Tensor
    j: torch.Tensor
    shift: torch.Tensor
    length: torch.Tensor

    def lengths(self, positions: torch.Tensor) -> torch.Tensor:
        """Current lengths [P] (Å) at positions [N, 3]."""
        return (positions[self.j] - positions[self.i] + self.shift).norm(dim=1)

    def keep_atoms(self, keep: torch.Tensor) -> Bonds:
        """Bonds among the atoms of the bool mask ``keep`` [N], renumbered as ``positions[keep]``.
        Bonds never join two structures, so keeping whole structures keeps both ends."""
        new_index = torch.cumsum(keep.long(), 0) - 1
        mask = keep[self.i]
        return Bonds(new_index[self.i[mask]], new_index[self.j[mask]], self.shift[mask],
                     self.length[mask])


def starting_bonds(batch: Batch, tolerance: float = BOND_TOLERANCE) -> Bonds:
    """Pairs closer than ``tolerance`` times the sum of their covalent radii in ``batch``
    (d = 3).

    Molecules: all intra-structure pairs at once; periodic cells: ase neighbour lists (both
    directions of each bond are listed, which changes no check).
    """
    periodic = batch.pbc.any(dim=1)
    radius = torch.as_tensor(covalent_radii, dtype=batch.dtype, device=batch.device)
    radius = radius[batch.numbers]  # [N] (Å)
    i, j = intra_structure_pairs(batch)
    molecular = ~periodic[batch.structure[i]]
    i, j = i[molecular], j[molecular]
    shift = batch.positions.new_zeros(len(i), 3)
    parts = [(i, j, shift)]
    if periodic.any():
        from ase.neighborlist import natural_cutoffs, neighbor_list

        offsets = batch.offsets
        for k in torch.nonzero(periodic).flatten().tolist():
            atoms = batch.select([k]).to_atoms()[0]
            pi, pj, cell_shift = neighbor_list("ijS", atoms,
                                               natural_cutoffs(atoms, mult=tolerance))
            cell_shift = torch.as_tensor(cell_shift, dtype=batch.dtype, device=batch.device)
            pi, pj = (torch.as_tensor(p, device=batch.device) + offsets[k] for p in (pi, pj))
            parts.append((pi, pj, cell_shift @ batch.cell[k]))
    i, j, shift = (torch.cat(column) for column in zip(*parts, strict=True))
    length = (batch.positions[j] - batch.positions[i] + shift).norm(dim=1)
    bonded = length < tolerance * (radius[i] + radius[j])
    return Bonds(i[bonded], j[bonded], shift[bonded], length[bonded])


def stability_test(
    committee: Committee,
    starts: Batch,
    temperature_K: float,
    steps: int,
    dt_fs: float = 0.5,
    floor: float = 0.5,
    bond_ceiling: float = 1.5,
    bond_tolerance: float = BOND_TOLERANCE,
    runs_per_start: int = 1,
    seed: int = 0,
    friction_per_fs: float = 0.01,
    progress: bool = True,
    executor: Any = None,
) -> StabilityResult:
    """Langevin NN-MD of ``runs_per_start`` runs from each start (d = 3), ``steps`` steps of
    ``dt_fs`` (fs) at ``temperature_K`` (K) with friction ``friction_per_fs`` (1/fs).

    floor: closest allowed interatomic distance (Å); bond_ceiling: largest allowed ratio of a
    starting bond's length to its start length; bond_tolerance: what counts as a starting
    bond (see :func:`starting_bonds`). Runs are seeded by ``seed``. ``executor`` (``workers``
    and ``map``, see ``advsample.executors``): the runs in that many chunks on its workers
    at once, chunk c seeded by ``chunks.chunk_seed(seed, c)`` (one chunk: this process).
    """
    runs = starts.without_labels().repeat(runs_per_start)
    start = np.repeat(np.arange(starts.n_structures), runs_per_start)
    settings = {"temperature_K": temperature_K, "steps": steps, "dt_fs": dt_fs,
                "floor": floor, "bond_ceiling": bond_ceiling, "bond_tolerance": bond_tolerance,
                "friction_per_fs": friction_per_fs}
    parts = chunks(runs.n_structures, getattr(executor, "workers", 1))
    if len(parts) <= 1:
        return _stability_runs(committee, runs, start, seed=seed, progress=progress,
                               **settings)
    state, on_cpu = committee.state(), runs.to(device="cpu")
    jobs = [(state, committee.compile, on_cpu.select(torch.as_tensor(part)), start[part],
             {**settings, "seed": chunk_seed(seed, c), "progress": progress and c == 0})
            for c, part in enumerate(parts)]
    return StabilityResult.concat(executor.map(_stability_chunk, jobs),
                                  [int(part[0]) for part in parts])


def _stability_chunk(job) -> StabilityResult:
    """Worker side of :func:`stability_test`: one chunk of runs with the committee rebuilt."""
    from advsample.executors import worker_threads

    state, compile_, runs, start, settings = job
    with worker_threads():
        committee = Committee.from_state(state)
        committee.compile = compile_
        committee.eval()
        return _stability_runs(committee, runs, start, **settings)


def _stability_runs(committee: Committee, runs: Batch, start: np.ndarray, temperature_K: float,
                    steps: int, dt_fs: float, floor: float, bond_ceiling: float,
                    bond_tolerance: float, friction_per_fs: float, seed: int,
                    progress: bool) -> StabilityResult:
    """:func:`stability_test` of the run structures ``runs`` (one batch, this process);
    ``start`` [R]: each run's start index."""
    n_runs = runs.n_structures
    generator = torch.Generator().manual_seed(seed)  # on the CPU: same runs on every device
    forces_fn = committee_forces(committee)
    state = init_state(runs, forces_fn, temperature_K, generator)
    bonds = starting_bonds(runs, bond_tolerance)
    alive = torch.ones(n_runs, dtype=torch.bool, device=runs.device)
    failed_step = torch.full((n_runs,), -1, dtype=torch.long, device=runs.device)
    reason = torch.zeros(n_runs, dtype=torch.long, device=runs.device)  # index into REASONS
    frames: dict[int, Atoms] = {}  # run -> its geometry at failure

    bar = progress_bar(total=steps, desc="stability", disable=not progress)
    for t in range(steps + 1):
        if t:
            noise = standard_normal(generator, runs.positions)
            state = langevin_step(state, forces_fn, dt_fs, temperature_K, friction_per_fs,
                                  noise=noise[alive[runs.structure]])
            bar.update()
        failure = _failure(state.batch, state.forces, state.energy, bonds, floor,
                           bond_ceiling)  # [alive runs]
        if not failure.any():
            continue
        live = torch.nonzero(alive).flatten()
        failed = failure > 0
        reason[live[failed]] = failure[failed]
        failed_step[live[failed]] = t
        for k in torch.nonzero(failed).flatten().tolist():
            run = int(live[k])
            frames[run] = _failed_frame(state.batch, bonds, k, REASONS[int(failure[k])])
            frames[run].info.update(run=run, start=int(start[run]), time_fs=t * dt_fs)
        alive[live[failed]] = False
        bonds = bonds.keep_atoms(~failed[state.batch.structure])
        state = state.select(~failed)
        bar.set_postfix(alive=int(alive.sum()))
        if not alive.any():
            break
    bar.close()

    failed_step = failed_step.cpu().numpy()
    return StabilityResult(
        time_to_failure_fs=np.where(failed_step >= 0, failed_step * dt_fs, math.nan),
        reason=[REASONS[r] for r in reason.tolist()],
        start=start,
        duration_fs=steps * dt_fs,
        temperature_K=temperature_K,
        culprit=[frames[r].info["culprit"] if r in frames else "" for r in range(n_runs)],
        failed_frames=[frames[r] for r in sorted(frames)],
    )


def _failed_frame(batch: Batch, bonds: Bonds, k: int, reason: str) -> Atoms:
    """Structure ``k`` of ``batch`` as ase.Atoms with its culprit in ``info``: the starting
    bond stretched most (relative to its start length) for "bond broken", the closest pair
    for "close contact", none for "non-finite energy"."""
    atoms = batch.select([k]).to_atoms()[0]
    first = int(batch.offsets[k])
    pair = None
    if reason == "bond broken":
        mine = batch.structure[bonds.i] == k
        ratio = bonds.lengths(batch.positions)[mine] / bonds.length[mine]
        best = int(torch.argmax(ratio))
        pair = (int(bonds.i[mine][best]) - first, int(bonds.j[mine][best]) - first)
    elif reason == "close contact" and len(atoms) > 1:
        d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
        np.fill_diagonal(d, np.inf)
        pair = tuple(int(x) for x in np.unravel_index(np.argmin(d), d.shape))
    culprit = ""
    if pair is not None:
        heavier_first = sorted(pair, key=lambda a: -atoms.numbers[a])
        culprit = "-".join(atoms.get_chemical_symbols()[a] for a in heavier_first)
    atoms.info.update(reason=reason, culprit=culprit,
                      pair=None if pair is None else list(pair))
    return atoms


def judge_frames(starts: Batch, frames: Batch, floor: float = 0.5, bond_ceiling: float = 1.5,
                 bond_tolerance: float = BOND_TOLERANCE) -> list[str]:
    """The stability judge on given geometries: frame k (atoms as in start k) is one of
    :data:`REASONS` by the rules of :func:`stability_test` (positions only; no forces)."""
    bonds = starting_bonds(starts, bond_tolerance)
    zeros = frames.positions.new_zeros(frames.positions.shape)
    failure = _failure(frames, zeros, frames.positions.new_zeros(frames.n_structures), bonds,
                       floor, bond_ceiling)
    return [REASONS[r] for r in failure.tolist()]


def _failure(batch: Batch, forces: torch.Tensor, energy: torch.Tensor, bonds: Bonds,
             floor: float, bond_ceiling: float) -> torch.Tensor:
    """long [B]: index into REASONS of each structure's failure (0 when sane), from positions
    and forces [N, 3] and energies [B]."""
    b = batch.n_structures
    bad = ~torch.isfinite(torch.cat([batch.positions, forces], dim=1)).all(dim=1)  # [N]
    n_bad = torch.zeros(b, dtype=torch.long, device=batch.device)
    finite = n_bad.index_add(0, batch.structure, bad.long()) == 0
    finite &= torch.isfinite(energy)
    close = min_interatomic_distance(batch, within=floor) < floor
    stretched = bonds.lengths(batch.positions) > bond_ceiling * bonds.length  # [P]
    n_broken = torch.zeros(b, dtype=torch.long, device=batch.device)
    broken = n_broken.index_add(0, batch.structure[bonds.i], stretched.long()) > 0
    failure = torch.zeros(b, dtype=torch.long, device=batch.device)
    failure = torch.where(broken, REASONS.index("bond broken"), failure)
    failure = torch.where(close, REASONS.index("close contact"), failure)
    return torch.where(~finite, REASONS.index("non-finite energy"), failure)
