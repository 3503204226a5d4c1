"""Random baselines: Gaussian (or uniform) displacements of seeds, and uniform points in a box.

Random candidates are scored with the same objective as attacks so the same selection
(uncertainty gate, de-duplication, cap) applies to every sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from advsample.attack import (
    AttackConfig,
    BoltzmannPrior,
    Candidates,
    constraints_hold,
    largest_atom_displacement,
    project,
    score,
)
from advsample.committee import Committee
from advsample.structures import Batch


def _scored(committee: Committee, seeds: Batch, delta: torch.Tensor, parent: torch.Tensor,
            prior: BoltzmannPrior, cfg: AttackConfig) -> Candidates:
    """Candidates at ``seeds`` displaced by δ [N, d] (Å), scored like attack endpoints."""
    batch = seeds.with_positions(seeds.positions + delta)
    committee.eval()
    objective, var, mean_e = score(committee, batch, prior, cfg.reduce)
    feasible = constraints_hold(batch, mean_e, prior, cfg) & torch.isfinite(objective)
    return Candidates(
        batch=batch.with_positions(batch.positions.detach()),
        objective=objective.detach(),
        uncertainty=var.detach(),
        energy=mean_e.detach(),
        parent=parent,
        step=torch.full((batch.n_structures,), -1, dtype=torch.long, device=batch.device),
        displacement=largest_atom_displacement(delta, seeds),
        feasible=feasible,
    )


@dataclass
class GaussianDisplacementSampler:
    """Each seed (× restarts) displaced by N(0, scale²) per coordinate, or U(−scale, scale).

    The displacement obeys the same projection as attacks (box, displacement bound, frozen
    atoms, no net translation) so baselines play by the same rules.
    """

    scale: float = 0.1
    distribution: str = "gaussian"
    config: AttackConfig = field(default_factory=AttackConfig)
    name: str = "random"

    def propose(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior) -> Candidates:
        """Every seed (× ``config.restarts``) displaced at random, projected like an attack and
        scored like attack endpoints; ``parent`` is the seed index, ``step`` −1. ValueError for an
        unknown distribution.
        """
        cfg = self.config
        parent = torch.arange(seeds.n_structures, device=seeds.device)
        parent = parent.repeat_interleave(cfg.restarts)
        seeds = seeds.without_labels().repeat(cfg.restarts)
        gen = torch.Generator().manual_seed(cfg.seed)  # on the CPU: same δ on every device
        draw = dict(size=seeds.positions.shape, generator=gen, dtype=seeds.dtype, device="cpu")
        if self.distribution == "gaussian":
            delta = torch.randn(**draw) * self.scale
        elif self.distribution == "uniform":
            delta = (torch.rand(**draw) * 2 - 1) * self.scale
        else:
            raise ValueError("distribution must be 'gaussian' or 'uniform'")
        delta = delta.to(seeds.device)
        return _scored(committee, seeds, project(delta, seeds, cfg), parent, prior, cfg)


@dataclass
class UniformBoxSampler:
    """Toy reference: as many points as seeds × restarts, uniform over ``config.box``."""

    config: AttackConfig = field(default_factory=AttackConfig)
    name: str = "uniform"

    def propose(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior) -> Candidates:
        """seeds × ``config.restarts`` uniform points of dimension ``seeds.dim`` in ``config.box``,
        scored like attack endpoints; the seeds' positions are not used, ``parent`` is −1.
        ValueError without a box.
        """
        cfg = self.config
        if cfg.box is None:
            raise ValueError("the uniform sampler needs a box")
        n = seeds.n_structures * cfg.restarts
        gen = torch.Generator().manual_seed(cfg.seed)  # on the CPU: same points on every device
        lo, hi = cfg.box
        points = torch.rand(n, seeds.dim, generator=gen, dtype=seeds.dtype, device="cpu")
        points = lo + (hi - lo) * points
        template = Batch.from_points(points, dtype=seeds.dtype).to(device=seeds.device)
        parent = torch.full((n,), -1, dtype=torch.long, device=seeds.device)
        delta = torch.zeros_like(template.positions)
        return _scored(committee, template, delta, parent, prior, cfg)
