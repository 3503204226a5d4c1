"""The MD baseline (METHOD.md section 6): NN-MD from the seeds, its frames are the candidates.

Every seed (× restarts, each with its own Maxwell-Boltzmann momenta) is integrated with
Langevin dynamics on the committee mean forces, all trajectories as one batch. Every
``interval`` steps each live trajectory's frame is scored like an attack candidate
(objective log L, σ²_F, mean energy). A trajectory stops for good at the first recorded frame
whose σ²_F exceeds the trust bound (the committee is no longer trusted to drive the
dynamics: DP-GEN's upper trust level, frames beyond it are not labelled) or that breaks the
sanity filters (min distance, energy ceiling, non-finite values); that frame and everything
after it is dropped. The frames recorded before are the candidates, so the same selection
(uncertainty gate, de-duplication, cap) applies as for every other sampler.

The trust bound is ``max_uncertainty`` in (eV/Å)² (``max_uncertainty_units="absolute"``) or,
with ``"seeds"``, ``max_uncertainty`` times the committee's mean σ²_F over the seeds (its
training structures), so one value holds across systems whose committees disagree on their
own data by orders of magnitude differently (mean σ²_F 4e-5 (eV/Å)² on NH3, 2e-3 on alanine
dipeptide at generation 0). Without a bound NN-MD from a young committee runs off into
configurations tens of eV above the minimum whose labels teach nothing about the application
(docs/benchmarks/alanine.md). A relative bound is never below ``min_uncertainty_bound``
((eV/Å)²): a committee whose members agree almost exactly on their training data (trained
without bootstrap on the paper's NH3 DFT frames: mean σ²_F 2.4e-5 on the seeds) would
otherwise stop 300 K trajectories within a few frames of their seeds (10x that is σ_F
0.015 eV/Å), leaving nothing distinct to label (3 of 20 picks; 20 with the floor 0.01).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from advsample.attack import (
    AttackConfig,
    BoltzmannPrior,
    Candidates,
    constraints_hold,
    largest_atom_displacement,
    score,
)
from advsample.committee import Committee
from advsample.dynamics import committee_forces, init_state, langevin_step, standard_normal
from advsample.progress import progress_bar
from advsample.structures import Batch

log = logging.getLogger(__name__)

TRUST_UNITS = ("absolute", "seeds")
"""Accepted units of ``MDSampler.max_uncertainty`` (see the module docstring)."""


@dataclass
class MDSampler:
    """Langevin NN-MD from every seed; frames every ``interval`` steps become candidates.

    temperature_K: thermostat temperature (K); steps: MD steps per trajectory; dt_fs: time
    step (fs); friction_per_fs: Langevin friction γ (1/fs); interval: steps between recorded
    frames; max_uncertainty: trust bound on σ²_F in ``max_uncertainty_units``, None for no
    bound: "absolute" ((eV/Å)²) or "seeds" (times the mean σ²_F of the seeds, but at least
    ``min_uncertainty_bound`` (eV/Å)²).
    Of ``config`` the MD uses restarts (trajectories per seed), seed (random numbers),
    reduce (σ²_F over atoms), min_distance and energy_ceiling (sanity filters) and progress.
    """

    temperature_K: float = 300.0
    steps: int = 1000
    dt_fs: float = 0.5
    friction_per_fs: float = 0.01
    interval: int = 10
    max_uncertainty: float | None = None
    max_uncertainty_units: str = "absolute"
    min_uncertainty_bound: float = 0.0
    config: AttackConfig = field(default_factory=AttackConfig)
    name: str = "md"

    def __post_init__(self) -> None:
        """Check the trust bound's units."""
        if self.max_uncertainty_units not in TRUST_UNITS:
            raise ValueError(f"max_uncertainty_units must be one of {TRUST_UNITS}, not "
                             f"{self.max_uncertainty_units!r}")

    def trust_bound(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior
                    ) -> float | None:
        """The σ²_F ((eV/Å)²) beyond which a trajectory stops, None for no bound."""
        if self.max_uncertainty is None:
            return None
        if self.max_uncertainty_units == "absolute":
            return float(self.max_uncertainty)
        _, variance, _ = score(committee, seeds.without_labels(), prior, self.config.reduce)
        return max(self.max_uncertainty * float(variance.detach().mean()),
                   self.min_uncertainty_bound)

    def forces_fn(self, committee: Committee, seeds: Batch):
        """positions batch -> (energy [B], forces [N, 3]) the dynamics integrates: the
        committee mean (subclasses bias it, and may scale the bias from the ``seeds``)."""
        return committee_forces(committee)

    def propose(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior) -> Candidates:
        """Frames of all trajectories before each one stopped; ``step`` is the MD step,
        ``parent`` the seed index and ``displacement`` the largest atom move from the seed (Å).
        """
        cfg = self.config
        device = seeds.device
        parent = torch.arange(seeds.n_structures, device=device).repeat_interleave(cfg.restarts)
        runs = seeds.without_labels().repeat(cfg.restarts)
        generator = torch.Generator().manual_seed(cfg.seed)  # on the CPU: same runs everywhere
        forces_fn = self.forces_fn(committee, seeds)
        bound = self.trust_bound(committee, seeds, prior)
        if bound is not None:
            log.info("%s: trajectories stop at σ²_F > %.4g (eV/Å)²", self.name, bound)
        state = init_state(runs, forces_fn, self.temperature_K, generator)
        alive = torch.ones(runs.n_structures, dtype=torch.bool, device=device)

        # recorded frames, concatenated at the end; the empty first entries fix dtypes
        empty = runs.positions.new_zeros(0)
        recorded = {"run": [parent[:0]], "positions": [runs.positions[:0]], "step": [parent[:0]],
                    "objective": [empty], "uncertainty": [empty], "energy": [empty]}
        for t in progress_bar(range(1, self.steps + 1), desc=self.name,
                              disable=not cfg.progress):
            # noise for every trajectory, so a trajectory does not depend on which others live
            noise = standard_normal(generator, runs.positions)
            state = langevin_step(state, forces_fn, self.dt_fs, self.temperature_K,
                                  self.friction_per_fs, noise=noise[alive[runs.structure]])
            if t % self.interval:
                continue
            objective, variance, energy = (
                v.detach() for v in score(committee, state.batch, prior, cfg.reduce)
            )
            ok = constraints_hold(state.batch, energy, prior, cfg) & torch.isfinite(objective)
            if bound is not None:
                ok &= variance <= bound
            live = torch.nonzero(alive).flatten()
            frame = {"run": live[ok], "positions": state.batch.positions[ok[state.batch.structure]],
                     "step": torch.full((int(ok.sum()),), t, dtype=torch.long, device=device),
                     "objective": objective[ok], "uncertainty": variance[ok], "energy": energy[ok]}
            for key, value in frame.items():
                recorded[key].append(value)
            alive[live[~ok]] = False
            state = state.select(ok)
            if not alive.any():
                break

        frames = {key: torch.cat(values) for key, values in recorded.items()}
        start = runs.select(frames["run"])
        batch = start.with_positions(frames["positions"])
        return Candidates(
            batch=batch,
            objective=frames["objective"],
            uncertainty=frames["uncertainty"],
            energy=frames["energy"],
            parent=parent[frames["run"]],
            step=frames["step"],
            displacement=largest_atom_displacement(batch.positions - start.positions, start),
            feasible=torch.ones(len(frames["run"]), dtype=torch.bool, device=device),
        )
