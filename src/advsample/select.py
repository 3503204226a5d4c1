"""Choose which candidates to label: sanity, uncertainty gate, de-duplication, cap.

Order (METHOD.md section 4): drop infeasible or non-finite candidates -> keep those whose
uncertainty exceeds the gate -> rank by objective -> greedily accept a candidate only if it
lies farther than ``min_separation`` from every training structure and every candidate
already accepted -> stop at ``max_new``. The greedy pass is both de-duplication and a
diversity filter: clusters of near-identical attack endpoints yield one label. With
``diversity="fps"`` the picks after the first (the best ranked) are made by farthest-point
sampling among the gated candidates instead: each next pick is the one farthest from all
picks so far, so a generation spends its budget on distinct regions rather than on the
neighbourhood of one maximum. The same module chooses attack seeds (:func:`choose_seeds`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from advsample.attack import Candidates
from advsample.committee import Committee
from advsample.structures import Batch
from advsample.uncertainty import force_variance


@dataclass
class SelectConfig:
    """max_new: labels per generation; gate_percentile: σ²_F threshold as this percentile of
    the training set's σ²_F (ignored if gate_absolute, in (eV/Å)², is set); min_separation:
    smallest allowed distance to training data and other picks (Å, or toy units); metric:
    "coordinates" (RMS of coordinate differences, no alignment: toys), "rmsd" (RMSD after
    optimal rotation and translation, same atom order) or "distances" (RMS difference of the
    sorted interatomic distances per element pair, blind to permutations of like atoms and
    to mirror images: molecules, see :func:`sorted_distances`); rank: the order in which
    gated candidates are taken: "objective" (log L, the attack's), "uncertainty" (σ²_F) or
    "random" (no preference among those above the gate, as MD-based AL takes its frames;
    seeded by ``seed``); diversity: "none" (take them in that order) or "fps"
    (farthest-point sampling after the first, see the module docstring)."""

    max_new: int = 20
    gate_percentile: float | None = 80.0
    gate_absolute: float | None = None
    min_separation: float = 0.01
    metric: str = "coordinates"
    reduce: str = "mean"
    rank: str = "objective"
    seed: int = 0
    diversity: str = "none"


def training_uncertainty(committee: Committee, training: Batch, reduce: str = "mean",
                         chunk: int = 4096) -> torch.Tensor:
    """σ²_F of every training structure [K] (eV/Å)²."""
    committee.eval()
    out = []
    for start in range(0, training.n_structures, chunk):
        index = torch.arange(start, min(start + chunk, training.n_structures),
                             device=training.device)
        part = training.select(index)
        forces = committee(part.without_labels()).forces.detach()
        out.append(force_variance(forces, part.structure, part.n_structures, reduce))
    return torch.cat(out)


def training_energy(committee: Committee, training: Batch, chunk: int = 4096
                    ) -> torch.Tensor:
    """Committee-mean energy of every training structure [K] (eV)."""
    committee.eval()
    out = []
    for start in range(0, training.n_structures, chunk):
        index = torch.arange(start, min(start + chunk, training.n_structures),
                             device=training.device)
        part = training.select(index).without_labels()
        out.append(committee(part, forces=False).mean_energy.detach())
    return torch.cat(out)


def gate_threshold(committee: Committee, training: Batch, cfg: SelectConfig) -> float:
    """The uncertainty a candidate must exceed to be labelled."""
    if cfg.gate_absolute is not None:
        return float(cfg.gate_absolute)
    if cfg.gate_percentile is None:
        return -float("inf")
    var = training_uncertainty(committee, training, cfg.reduce).cpu().numpy()
    return float(np.percentile(var, cfg.gate_percentile))


def _flat_coordinates(batch: Batch, index: torch.Tensor) -> torch.Tensor:
    return batch.select(index).positions.reshape(len(index), -1)


def distances_to(reference: Batch, candidate: Batch, metric: str) -> torch.Tensor:
    """Distance [K] from the single structure ``candidate`` to each structure of ``reference``.

    Structures with another composition or atom count are at distance inf.
    """
    n = candidate.positions.shape[0]
    same = (reference.n_atoms == n)
    idx = torch.nonzero(same).flatten()
    out = candidate.positions.new_full((reference.n_structures,), float("inf"))
    if len(idx) == 0:
        return out
    ref = reference.select(idx)
    ref_pos = ref.positions.reshape(len(idx), n, -1).detach()
    ref_num = ref.numbers.reshape(len(idx), n)
    x = candidate.positions.detach().unsqueeze(0)
    match = (ref_num == candidate.numbers.unsqueeze(0)).all(dim=1)
    if metric == "coordinates":
        d = (ref_pos - x).pow(2).sum(-1).mean(-1).sqrt()
    elif metric == "rmsd":
        d = kabsch_rmsd(ref_pos, x.expand_as(ref_pos))
    elif metric == "distances":
        if bool(candidate.pbc.any()) or bool(ref.pbc.any()):
            raise ValueError("select.metric 'distances' compares molecules; periodic "
                             "structures need 'rmsd' or 'coordinates'")
        d = (sorted_distances(ref_pos, candidate.numbers)
             - sorted_distances(x, candidate.numbers)).pow(2).mean(-1).sqrt()
    else:
        raise ValueError(f"metric must be 'coordinates', 'rmsd' or 'distances', got {metric!r}")
    out[idx] = torch.where(match, d, torch.full_like(d, float("inf")))
    return out


def sorted_distances(positions: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
    """Every interatomic distance, sorted within each pair of elements: [P, n, 3] positions
    of P structures with atomic numbers [n] -> [P, n(n-1)/2] (Å), the groups in a fixed order.

    Invariant to rotation, translation, reflection and any permutation of like atoms, as the
    committee's energy is: the mirror image of an NH3 geometry or the same geometry with two
    hydrogens swapped is at distance 0 from it (the "distances" metric of :func:`distances_to`).
    """
    n = positions.shape[1]
    i, j = torch.triu_indices(n, n, 1, device=positions.device)
    r = (positions[:, i] - positions[:, j]).norm(dim=-1)  # [P, pairs]
    pair_type = torch.minimum(numbers[i], numbers[j]) * 128 + torch.maximum(numbers[i],
                                                                         numbers[j])
    # by distance, then (stably) by pair type: groups in a fixed order, sorted inside, with no
    # combined float key to lose precision
    by_distance = torch.argsort(r, dim=-1, stable=True)
    by_type = torch.argsort(pair_type[by_distance], dim=-1, stable=True)
    return torch.gather(r, -1, torch.gather(by_distance, -1, by_type))


def kabsch_rmsd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMSD after optimal superposition of each pair: a, b [P, n, 3] -> [P] (Å)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    h = a.transpose(1, 2) @ b  # [P, 3, 3] covariance
    u, s, vt = torch.linalg.svd(h)
    sign = torch.sign(torch.linalg.det(u @ vt))
    s = torch.cat([s[:, :2], (s[:, 2] * sign).unsqueeze(1)], dim=1)
    msd = (a.pow(2).sum((1, 2)) + b.pow(2).sum((1, 2)) - 2 * s.sum(1)) / a.shape[1]
    return msd.clamp_min(0).sqrt()


def select(candidates: Candidates, training: Batch, threshold: float,
           cfg: SelectConfig) -> torch.Tensor:
    """Indices of the chosen candidates (long [n_chosen] on the candidates' device, in the
    order of ``cfg.rank``)."""
    ok = candidates.feasible & torch.isfinite(candidates.objective)
    ok &= candidates.uncertainty > threshold
    order = torch.nonzero(ok).flatten()
    if cfg.rank == "random":
        shuffle = torch.randperm(len(order), generator=torch.Generator().manual_seed(cfg.seed))
        order = order[shuffle.to(order.device)]
    elif cfg.rank in ("objective", "uncertainty"):
        key = candidates.objective if cfg.rank == "objective" else candidates.uncertainty
        order = order[torch.argsort(key[order], descending=True)]
    else:
        raise ValueError(f"rank must be objective, uncertainty or random, got {cfg.rank!r}")
    if cfg.diversity == "fps":
        pool = candidates.batch.select(order)

        def novel(i: int) -> bool:
            """Whether pool structure i is farther than min_separation from training."""
            return bool(distances_to(training, pool.select([i]), cfg.metric).min()
                        > cfg.min_separation)

        picks = farthest_points(pool, 0, cfg.max_new, cfg.metric, novel, cfg.min_separation)
        return order[torch.as_tensor(picks, dtype=torch.long, device=order.device)]
    if cfg.diversity != "none":
        raise ValueError(f"diversity must be 'none' or 'fps', got {cfg.diversity!r}")
    chosen: list[int] = []
    for k in order.tolist():
        if len(chosen) >= cfg.max_new:
            break
        cand = candidates.batch.select([k])
        if distances_to(training, cand, cfg.metric).min() <= cfg.min_separation:
            continue
        if chosen:
            picked = candidates.batch.select(chosen)
            if distances_to(picked, cand, cfg.metric).min() <= cfg.min_separation:
                continue
        chosen.append(k)
    return torch.tensor(chosen, dtype=torch.long, device=candidates.objective.device)


def farthest_points(batch: Batch, first: int, n: int, metric: str,
                    allowed: Callable[[int], bool] | None = None,
                    min_separation: float = 0.0) -> list[int]:
    """Up to ``n`` structure indices of ``batch`` by farthest-point sampling from ``first``.

    Each next index is the structure whose distance (``metric``, see :func:`distances_to`) to
    the nearest one taken so far is largest; a structure for which ``allowed`` is False is
    skipped, and the sampling stops when every remaining structure lies within
    ``min_separation`` of one taken. Structures of another composition count as infinitely
    far. One distance row per structure examined: O(n · B) distances.
    """
    nearest = batch.positions.new_full((batch.n_structures,), math.inf)
    taken: list[int] = []
    current = first
    while True:
        if allowed is None or allowed(current):
            taken.append(current)
            nearest = torch.minimum(nearest, distances_to(batch, batch.select([current]),
                                                          metric))
        nearest[current] = -math.inf  # examined: never again
        if len(taken) >= n:
            return taken
        current = int(torch.argmax(nearest))
        if not nearest[current] > min_separation:
            return taken


def choose_seeds(committee: Committee, training: Batch, n: int | None, how: str = "random",
                 seed: int = 0, metric: str = "rmsd", reduce: str = "mean") -> torch.Tensor:
    """Indices (long, sorted) of the ``n`` training structures to attack from (all if None
    or n >= K): "random" (uniform, seeded by ``seed``), "uncertainty" (the n with the highest
    σ²_F under ``committee``) or "spread" (farthest-point sampling in ``metric`` from the most
    uncertain one, so the seeds cover the training set)."""
    k = training.n_structures
    if n is None or n >= k:
        return torch.arange(k, device=training.device)
    if how == "random":
        index = np.random.default_rng(seed).choice(k, n, replace=False)
    elif how in ("uncertainty", "spread"):
        variance = training_uncertainty(committee, training, reduce)
        if how == "uncertainty":
            index = torch.argsort(variance, descending=True)[:n].cpu().numpy()
        else:
            index = np.array(farthest_points(training.without_labels(),
                                             int(torch.argmax(variance)), n, metric))
    else:
        raise ValueError(f"seed choice must be random, uncertainty or spread, got {how!r}")
    return torch.as_tensor(np.sort(index), dtype=torch.long, device=training.device)
