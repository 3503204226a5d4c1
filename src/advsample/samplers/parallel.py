"""Seeds split over an executor's workers: the sampler runs once per chunk of seeds, the
chunks at the same time (``sampler.parallel``).

Why: on a CPU, the attack of a few hundred small structures is a chain of small tensor
operations, and a second thread of the same process speeds it up little; a second process
with its own share of the seeds runs about as fast as the first. The same holds for
training, where ``train.parallel`` trains groups of members on the workers.

Which samplers: those whose candidates from one seed do not depend on the other seeds
(the attack, random displacements, NN-MD with no trust bound or an absolute one). Their
chunks give what one run over all seeds gives, but for the random numbers
(:mod:`advsample.chunks`: chunk c runs with the sampler's seed + 7919 c, so a single worker
reproduces the serial run exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from advsample.attack import BoltzmannPrior, Candidates
from advsample.chunks import chunk_seed, chunks
from advsample.committee import Committee
from advsample.structures import Batch

SPLITTABLE = ("attack", "random", "md")
CANDIDATE_FIELDS = ("objective", "uncertainty", "energy", "parent", "step", "displacement",
                    "feasible")


def splittable(sampler) -> bool:
    """Whether ``sampler``'s candidates of one seed depend on that seed alone."""
    if getattr(sampler, "name", None) not in SPLITTABLE:
        return False
    return not (getattr(sampler, "max_uncertainty", None) is not None
                and getattr(sampler, "max_uncertainty_units", "absolute") != "absolute")


@dataclass
class ParallelSampler:
    """``sampler`` run on ``executor.workers`` contiguous chunks of the seeds at once through
    ``executor.map``; the candidates come back in seed order with ``parent`` indexing the
    full seed batch. ValueError for a sampler that is not :func:`splittable`."""

    sampler: Any
    executor: Any

    def __post_init__(self) -> None:
        if not splittable(self.sampler):
            raise ValueError(f"sampler {getattr(self.sampler, 'name', self.sampler)!r} cannot "
                             f"split its seeds over workers (only {', '.join(SPLITTABLE)}; md "
                             "without a trust bound relative to the seeds)")

    @property
    def name(self) -> str:
        """The wrapped sampler's name (provenance records it)."""
        return self.sampler.name

    @property
    def config(self):
        """The wrapped sampler's AttackConfig (seed, restarts, constraints)."""
        return self.sampler.config

    def propose(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior) -> Candidates:
        """Candidates of every seed (see the wrapped sampler's ``propose``)."""
        parts = chunks(seeds.n_structures, getattr(self.executor, "workers", 1))
        if len(parts) <= 1:
            return self.sampler.propose(committee, seeds, prior)
        state = committee.state()
        cpu_seeds = seeds.to(device="cpu")
        prior = replace(prior, element_energy=prior.element_energy.cpu())
        jobs = [(chunk_sampler(self.sampler, c), state, committee.compile,
                 cpu_seeds.select(torch.as_tensor(chunk)), prior)
                for c, chunk in enumerate(parts)]
        results = self.executor.map(_propose_chunk, jobs)
        found = []
        for chunk, (candidates, evaluated) in zip(parts, results, strict=True):
            committee.evaluated += evaluated
            found.append(replace(candidates, parent=candidates.parent + int(chunk[0])))
        merged = Candidates.concat(found)
        device = seeds.device
        return replace(merged, batch=merged.batch.to(device=device),
                       **{k: getattr(merged, k).to(device) for k in CANDIDATE_FIELDS})


def chunk_sampler(sampler, chunk: int):
    """A copy of ``sampler`` for chunk ``chunk``: its seed that chunk's
    (:func:`advsample.chunks.chunk_seed`), progress shown by chunk 0 only."""
    cfg = sampler.config
    return replace(sampler, config=replace(cfg, seed=chunk_seed(cfg.seed, chunk),
                                           progress=cfg.progress and chunk == 0))


def _propose_chunk(job) -> tuple[Candidates, int]:
    """Worker side of :meth:`ParallelSampler.propose`: (candidates of the chunk's seeds,
    structures the committee evaluated)."""
    from advsample.executors import worker_threads

    sampler, state, compile_, seeds, prior = job
    with worker_threads():
        committee = Committee.from_state(state)
        committee.compile = compile_
        committee.eval()
        candidates = sampler.propose(committee, seeds, prior)
    detached = {k: getattr(candidates, k).detach() for k in CANDIDATE_FIELDS}
    return replace(candidates, **detached), committee.evaluated
