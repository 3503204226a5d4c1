"""The adversarial sampler: gradient ascent of log L from every seed (attack.py), optionally
followed by a short thermalisation of each attacked structure.

Why thermalise: the attack maximises σ²_F · exp(−E/kT) over a structure, so it ends near a
*mode* of the Boltzmann-weighted uncertainty, where every bond sits close to its relaxed
length. A thermal structure at temperature T has about ½ k_B T of potential energy per
vibrational mode on top of that: in high dimension the typical structure is not the most
probable one. Measured on alanine dipeptide (docs/benchmarks/alanine.md): the heavy-atom bond
lengths of torsion-attack labels deviate 0.018 Å (RMS) from the relaxed ones, those of 300 K
MD frames 0.025-0.029 Å, and the attack's committees broke their C-C bonds in 300 K NN-MD
more often than MD-AL's. A few tens of fs of Langevin NN-MD from each attacked structure at
the application temperature keep the structure the attack found (torsions barely move in
that time) and give its bonds their thermal spread. On alanine that made the committees
stable sooner but found the rare basins later and fitted the relaxed scan worse
(docs/benchmarks/alanine_thermalize.md), so it is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from advsample.attack import (
    AttackConfig,
    BoltzmannPrior,
    Candidates,
    attack,
    constraints_hold,
    largest_atom_displacement,
    score,
    wrap_positions,
)
from advsample.committee import Committee
from advsample.dynamics import committee_forces, init_state, langevin_step
from advsample.structures import Batch

THERMALIZE_SEED_OFFSET = 104_729  # the thermalisation's noise stream differs from δ0's


@dataclass
class AdversarialSampler:
    """The attack as a sampler: :func:`advsample.attack.attack` with ``config`` from every seed;
    with ``thermalize_fs`` > 0 each attacked structure then runs that long (fs) of Langevin
    NN-MD on the committee mean at ``thermalize_temperature_K`` (K) with time step
    ``timestep_fs`` (see :func:`thermalized`)."""

    config: AttackConfig = field(default_factory=AttackConfig)
    thermalize_fs: float = 0.0
    thermalize_temperature_K: float = 300.0
    timestep_fs: float = 0.5
    name: str = "attack"

    def propose(self, committee: Committee, seeds: Batch, prior: BoltzmannPrior) -> Candidates:
        """Attack every seed (× ``config.restarts``): one candidate per seed and restart, ``parent``
        the seed index, ``step`` the attack step kept; thermalised when configured.
        """
        candidates = attack(committee, seeds, prior, self.config)
        if self.thermalize_fs > 0:
            candidates = thermalized(committee, candidates, prior, self.config,
                                     self.thermalize_fs, self.thermalize_temperature_K,
                                     self.timestep_fs)
        return candidates


def thermalized(committee: Committee, candidates: Candidates, prior: BoltzmannPrior,
                cfg: AttackConfig, duration_fs: float, temperature_K: float,
                timestep_fs: float = 0.5, friction_per_fs: float = 0.01) -> Candidates:
    """``candidates`` after ``duration_fs`` (fs) of Langevin NN-MD on the committee mean at
    ``temperature_K`` (K), all structures as one batch, from Maxwell-Boltzmann momenta
    (seeded by ``cfg.seed``), re-scored: objective, σ²_F and energy at the new positions;
    feasible only if the attacked structure was and the new one meets ``cfg``'s distance and
    energy constraints; displacement grows by each structure's largest thermal move (Å).
    ``parent`` and ``step`` are kept.
    """
    steps = max(1, round(duration_fs / timestep_fs))
    generator = torch.Generator().manual_seed(cfg.seed + THERMALIZE_SEED_OFFSET)
    forces_fn = committee_forces(committee)
    start = candidates.batch.without_labels()
    state = init_state(start, forces_fn, temperature_K, generator)
    for _ in range(steps):
        state = langevin_step(state, forces_fn, timestep_fs, temperature_K, friction_per_fs,
                              generator=generator)
    moved = state.batch.positions.detach() - start.positions
    batch = wrap_positions(start.with_positions(state.batch.positions.detach()))
    objective, var, energy = (v.detach() for v in score(committee, batch, prior, cfg.reduce))
    feasible = (candidates.feasible & constraints_hold(batch, energy, prior, cfg)
                & torch.isfinite(objective))
    return Candidates(batch=batch, objective=objective, uncertainty=var, energy=energy,
                      parent=candidates.parent, step=candidates.step,
                      displacement=candidates.displacement
                      + largest_atom_displacement(moved, start),
                      feasible=feasible)
