"""Choose which candidates to label: sanity, uncertainty gate, de-duplication, cap.

Order (METHOD.md section 4): drop infeasible or non-finite candidates -> keep those whose
uncertainty exceeds the gate -> rank by objective -> greedily accept a candidate only if it
lies farther than ``min_separation`` from every training structure and every candidate
already accepted -> stop at ``max_new``. The greedy pass is both de-duplication and a
diversity filter: clusters of near-identical attack endpoints yield one label.
"""

from __future__ import annotations

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
    "coordinates" (RMS of coordinate differences, no alignment: toys) or "rmsd" (RMSD after
    optimal rotation and translation, same atom order: molecules); rank: the order in which
    gated candidates are taken: "objective" (log L, the attack's), "uncertainty" (σ²_F) or
    "random" (no preference among those above the gate, as MD-based AL takes its frames;
    seeded by ``seed``)."""

    max_new: int = 20
    gate_percentile: float | None = 80.0
    gate_absolute: float | None = None
    min_separation: float = 0.01
    metric: str = "coordinates"
    reduce: str = "mean"
    rank: str = "objective"
    seed: int = 0


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
    else:
        raise ValueError(f"metric must be 'coordinates' or 'rmsd', got {metric!r}")
    out[idx] = torch.where(match, d, torch.full_like(d, float("inf")))
    return out


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
