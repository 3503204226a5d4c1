"""Batched Langevin dynamics of many structures at once (BAOAB splitting).

Units follow ASE: positions in Å, energies in eV, forces in eV/Å, masses in amu, temperatures
in K, and time in fs at the interface. Internally time is in ASE units (1 fs = ase.units.fs),
so momenta are in ASE units, √(amu·eV), exactly as ``ase.Atoms.get_momenta()``, and
p²/m is an energy in eV.

One BAOAB step (Leimkuhler & Matthews, 2013) moves every atom of every structure at once:

    B: p ← p + ½Δt F(x)
    A: x ← x + ½Δt p/m
    O: p ← c p + √((1 − c²) m kT) ξ,   c = exp(−γΔt),  ξ ~ N(0, 1) per coordinate
    A: x ← x + ½Δt p/m
    B: p ← p + ½Δt F(x)

With friction γ = 0 the O step vanishes and the step is velocity Verlet (NVE). The net
momentum of every structure with more than one atom and no fixed atoms is removed at the
start and after each O step, so such a structure has d(n − 1) degrees of freedom. Fixed
atoms (``Batch.fixed``) never move. Structures do not interact: the whole batch is
integrated with tensor operations, without a loop over structures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from ase import units
from ase.data import atomic_masses as ASE_MASSES

from advsample.committee import Committee
from advsample.structures import Batch

ForcesFn = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]
"""Batch -> (potential energy [B] in eV, forces [N, d] in eV/Å), both without gradients."""


@dataclass(kw_only=True)
class MDState:
    """Structures in motion.

    batch:   the structures at positions x [N, d] (Å), without labels
    momenta: p [N, d], ASE units √(amu·eV) (velocity in Å per ASE time unit times mass)
    masses:  m [N] (amu)
    energy:  potential energy [B] (eV) at x
    forces:  F [N, d] (eV/Å) at x
    """

    batch: Batch
    momenta: torch.Tensor
    masses: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor

    def select(self, keep: torch.Tensor) -> MDState:
        """The structures where the bool mask ``keep`` [B] is true, in order."""
        atoms = keep[self.batch.structure]
        return MDState(
            batch=self.batch.select(keep),
            momenta=self.momenta[atoms],
            masses=self.masses[atoms],
            energy=self.energy[keep],
            forces=self.forces[atoms],
        )


def atomic_masses(batch: Batch) -> torch.Tensor:
    """Standard atomic masses [N] (amu) from ase.data; toy coordinates (Z = 0) get 1 amu."""
    masses = torch.as_tensor(ASE_MASSES, dtype=batch.dtype, device=batch.device)
    return masses[batch.numbers]


def standard_normal(generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """ξ ~ N(0, 1) shaped, typed and placed like ``like``, drawn on the generator's device (the
    CPU without one), so a CPU generator gives the same numbers whatever device ``like`` is on.
    """
    device = "cpu" if generator is None else generator.device
    xi = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device)
    return xi.to(like.device)


def committee_forces(committee: Committee) -> ForcesFn:
    """The committee's mean energy [B] (eV) and mean forces [N, d] (eV/Å) as a ForcesFn.

    Puts the committee in evaluation mode (forces without a graph for higher derivatives).
    """
    committee.eval()

    def forces_fn(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Committee-mean energy [B] (eV) and forces [N, 3] (eV/Å), detached."""
        out = committee(batch, forces=True)
        return out.mean_energy.detach(), out.mean_forces.detach()

    return forces_fn


def degrees_of_freedom(batch: Batch) -> torch.Tensor:
    """Kinetic degrees of freedom per structure [B]: d per mobile atom, less d if the net
    momentum is removed."""
    mobile = torch.zeros(batch.n_structures, dtype=batch.dtype, device=batch.positions.device)
    mobile = mobile.index_add(0, batch.structure, _mobile(batch).squeeze(1))
    return batch.dim * (mobile - _drift_free(batch).to(batch.dtype))


def kinetic_energy(state: MDState) -> torch.Tensor:
    """Σ_i p_i² / 2m_i per structure [B] (eV)."""
    per_atom = state.momenta.pow(2).sum(1) / (2 * state.masses)
    out = torch.zeros_like(state.energy)
    return out.index_add(0, state.batch.structure, per_atom)


def temperature(state: MDState) -> torch.Tensor:
    """Instantaneous kinetic temperature 2 K / (f k_B) per structure [B] (K)."""
    dof = degrees_of_freedom(state.batch).clamp_min(1)
    return 2 * kinetic_energy(state) / (dof * units.kB)


def init_state(
    batch: Batch,
    forces_fn: ForcesFn,
    temperature_K: float,
    generator: torch.Generator | None = None,
    masses: torch.Tensor | None = None,
) -> MDState:
    """Structures with Maxwell-Boltzmann momenta at ``temperature_K`` (K), net momentum removed.

    masses: [N] (amu), by default the standard atomic masses of ``batch.numbers``.
    """
    batch = batch.without_labels()
    if masses is None:
        masses = atomic_masses(batch)
    masses = masses.to(dtype=batch.dtype, device=batch.device)
    noise = standard_normal(generator, batch.positions)
    momenta = (masses * units.kB * temperature_K).sqrt().unsqueeze(1) * noise * _mobile(batch)
    energy, forces = forces_fn(batch)
    return MDState(
        batch=batch,
        momenta=_remove_net_momentum(momenta, masses, batch),
        masses=masses,
        energy=energy,
        forces=forces,
    )


def langevin_step(
    state: MDState,
    forces_fn: ForcesFn,
    dt_fs: float,
    temperature_K: float,
    friction_per_fs: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> MDState:
    """One BAOAB step of length ``dt_fs`` (fs) with friction γ = ``friction_per_fs`` (1/fs).

    noise: the standard normal numbers ξ [N, d] of the O step; drawn from ``generator`` when
    not given (passing them lets a caller give each trajectory its own stream).
    Calls ``forces_fn`` once, at the new positions.
    """
    dt = dt_fs * units.fs  # ASE time units
    mass = state.masses.unsqueeze(1)  # [N, 1]
    mobile = _mobile(state.batch)  # [N, 1]
    if noise is None:
        noise = standard_normal(generator, state.momenta)
    c = math.exp(-friction_per_fs * dt_fs)
    kick = math.sqrt((1 - c * c) * units.kB * temperature_K)

    p = state.momenta + 0.5 * dt * state.forces * mobile
    x = state.batch.positions + 0.5 * dt * p / mass
    p = c * p + kick * mass.sqrt() * noise * mobile
    p = _remove_net_momentum(p, state.masses, state.batch)
    x = x + 0.5 * dt * p / mass
    batch = state.batch.with_positions(x)
    energy, forces = forces_fn(batch)
    p = p + 0.5 * dt * forces * mobile
    return MDState(batch=batch, momenta=p, masses=state.masses, energy=energy, forces=forces)


def _mobile(batch: Batch) -> torch.Tensor:
    """[N, 1]: 1 for atoms that move, 0 for fixed ones."""
    if batch.fixed is None:
        return torch.ones_like(batch.positions[:, :1])
    return (~batch.fixed).to(batch.dtype).unsqueeze(1)


def _drift_free(batch: Batch) -> torch.Tensor:
    """bool [B]: structures whose net momentum is removed (several atoms, none fixed)."""
    free = batch.n_atoms > 1
    if batch.fixed is not None:
        n_fixed = torch.zeros_like(free, dtype=torch.long).index_add(
            0, batch.structure, batch.fixed.long()
        )
        free &= n_fixed == 0
    return free


def _remove_net_momentum(
    momenta: torch.Tensor, masses: torch.Tensor, batch: Batch
) -> torch.Tensor:
    """p_i − m_i P / M per drift-free structure (P its momentum, M its mass); [N, d]."""
    b = batch.n_structures
    total = momenta.new_zeros(b, momenta.shape[1]).index_add(0, batch.structure, momenta)
    mass = masses.new_zeros(b).index_add(0, batch.structure, masses)
    velocity = torch.where(_drift_free(batch).unsqueeze(1), total / mass.unsqueeze(1), 0.0)
    return momenta - masses.unsqueeze(1) * velocity[batch.structure]
