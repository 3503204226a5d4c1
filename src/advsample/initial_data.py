"""Initial training data for a system that has none, generated with the oracle itself.

Two recipes around a starting geometry (ideally a minimum): Langevin molecular dynamics
driven by the oracle, and displacements along the harmonic normal modes with Boltzmann
amplitudes. Both return ``ase.Atoms`` carrying the oracle's energy (eV) and forces [n, 3]
(eV/Å) in a SinglePointCalculator: train on them directly, or write them with ``ase.io.write``
(extxyz) and load them with :meth:`advsample.store.Store.import_extxyz`.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.optimize import BFGS

from advsample.oracles.base import Oracle

# ħ in eV per sqrt(eV / (Å² amu)): ħω (eV) = HBAR * sqrt(λ) for a mass-weighted Hessian
# eigenvalue λ in eV / (Å² amu)
HBAR = units._hbar * 1e10 / np.sqrt(units._e * units._amu)


def relaxed(atoms: Atoms, calculator, fmax: float = 0.005, steps: int = 200) -> Atoms:
    """A copy of ``atoms`` relaxed with ``calculator`` (symmetry is kept by the forces)."""
    out = atoms.copy()
    out.calc = calculator
    BFGS(out, logfile=None).run(fmax=fmax, steps=steps)
    out.calc = None
    return out


def oracle_md(
    atoms: Atoms,
    oracle: Oracle,
    temperature_K: float,
    steps: int,
    timestep_fs: float = 0.5,
    interval: int = 10,
    seed: int = 0,
    friction_per_fs: float = 0.01,
) -> list[Atoms]:
    """Frames of a Langevin (NVT) trajectory on the oracle's potential-energy surface.

    Velocities start from a Maxwell-Boltzmann distribution at ``temperature_K`` (net momentum
    and, for molecules, rotation removed; the centre of mass stays fixed); the thermostat's
    friction is ``friction_per_fs`` (1/fs). A frame is kept at step 0 and every ``interval``
    steps, ``steps // interval + 1`` frames, labelled with the energy and forces the dynamics
    computed anyway. An oracle failure ends the run with its exception (an ASE
    ``CalculationFailed`` or similar).
    """
    if steps < 0 or interval < 1:
        raise ValueError("steps must be >= 0 and interval >= 1")
    rng = np.random.default_rng(seed)
    work = atoms.copy()
    work.set_constraint([*work.constraints, FixCom()])
    work.calc = oracle.calculator()
    kT = units.kB * temperature_K
    work.set_momenta(rng.normal(size=(len(work), 3)) * np.sqrt(work.get_masses()[:, None] * kT))
    Stationary(work)
    if not work.pbc.any():
        ZeroRotation(work)
    dynamics = Langevin(
        work,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    frames: list[Atoms] = []

    def keep() -> None:
        """Store the current frame with its raw labels."""
        forces = work.get_forces(apply_constraint=False)  # raw labels, not FixCom's
        frames.append(_labelled(work, work.get_potential_energy(), forces))

    dynamics.attach(keep, interval=interval)
    dynamics.run(steps)
    return frames


def normal_mode_sampling(
    atoms: Atoms,
    oracle: Oracle,
    temperature_K: float,
    n_samples: int,
    seed: int = 0,
    step: float = 0.01,
    min_wavenumber: float = 50.0,
) -> list[Atoms]:
    """Structures displaced along the normal modes of ``atoms`` with classical Boltzmann
    amplitudes, labelled by the oracle.

    The Hessian [3n, 3n] (eV/Å²) comes from central differences of the oracle's forces
    (displacements ``step`` Å, 6n force calls). Rigid translations (and, for molecules,
    rotations) are projected out of the mass-weighted Hessian; each remaining mode k with
    eigenvalue λ_k (eV/(Å² amu)) and wavenumber >= ``min_wavenumber`` (cm⁻¹) gets a
    mass-weighted coordinate q_k ~ N(0, k_B T / λ_k), the harmonic Boltzmann distribution.
    Softer and imaginary modes are not displaced. Samples whose label fails are dropped with
    a warning, so fewer than ``n_samples`` may come back.
    """
    rng = np.random.default_rng(seed)
    masses = np.repeat(atoms.get_masses(), 3)  # [3n] amu
    hessian = finite_difference_hessian(atoms, oracle, step)
    weighted = hessian / np.sqrt(np.outer(masses, masses))
    projector = _rigid_body_projector(atoms)
    eigenvalues, modes = np.linalg.eigh(projector @ weighted @ projector)
    wavenumber = HBAR * np.sqrt(np.clip(eigenvalues, 0.0, None)) / units.invcm  # [3n] cm⁻¹
    keep = (eigenvalues > 0) & (wavenumber >= min_wavenumber)
    if not keep.any():
        raise ValueError(f"no mode of {atoms.get_chemical_formula()} above {min_wavenumber} cm⁻¹")
    kT = units.kB * temperature_K
    q = rng.normal(size=(n_samples, int(keep.sum()))) * np.sqrt(kT / eigenvalues[keep])
    displacements = (q @ modes[:, keep].T) / np.sqrt(masses)  # [n_samples, 3n] Å

    samples = []
    for k, displacement in enumerate(displacements):
        candidate = atoms.copy()
        candidate.calc = None
        candidate.positions += displacement.reshape(-1, 3)
        result = oracle.label(candidate)
        if result.ok:
            samples.append(_labelled(candidate, result.energy, result.forces))
        else:
            warnings.warn(f"normal-mode sample {k} dropped: {result.message}", stacklevel=2)
    return samples


def finite_difference_hessian(atoms: Atoms, oracle: Oracle, step: float = 0.01) -> np.ndarray:
    """Symmetrised Hessian [3n, 3n] (eV/Å²) from central differences of the oracle's forces
    with displacements of ``step`` Å."""
    work = atoms.copy()
    work.calc = oracle.calculator()
    reference = work.get_positions()
    n = 3 * len(work)
    hessian = np.empty((n, n))
    for column in range(n):
        forces = []
        for sign in (1.0, -1.0):
            shifted = reference.copy()
            shifted.flat[column] += sign * step
            work.set_positions(shifted)
            forces.append(work.get_forces(apply_constraint=False).ravel())
        hessian[:, column] = -(forces[0] - forces[1]) / (2 * step)
    return 0.5 * (hessian + hessian.T)


def _rigid_body_projector(atoms: Atoms) -> np.ndarray:
    """[3n, 3n] projector removing translations (and rotations if not periodic) in
    mass-weighted coordinates."""
    sqrt_m = np.sqrt(atoms.get_masses())[:, None]  # [n, 1]
    vectors = [np.tile(np.eye(3)[a], (len(atoms), 1)) * sqrt_m for a in range(3)]
    if not atoms.pbc.any():
        centred = atoms.positions - atoms.get_center_of_mass()
        vectors += [np.cross(np.eye(3)[a], centred) * sqrt_m for a in range(3)]
    basis = np.stack([v.ravel() for v in vectors], axis=1)  # [3n, 3 or 6]
    u, s, _ = np.linalg.svd(basis, full_matrices=False)
    u = u[:, s > 1e-8 * s.max()]  # linear molecules have only two rotations
    return np.eye(basis.shape[0]) - u @ u.T


def _labelled(atoms: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    """A copy of ``atoms`` (positions, cell, pbc, numbers) carrying the given labels."""
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=np.array(forces))
    return frame


def uniform_box_points(oracle: Oracle, n: int, energy_max: float | None,
                       box: tuple[float, float], dim: int, seed: int = 0) -> list[Atoms]:
    """Toy initial data: ``n`` uniform points in ``box``^dim, labelled by the oracle, keeping
    those whose energy is below ``energy_max`` (all when None). Points are toy atoms "X"
    (see ``Batch.to_atoms``); a failed label drops its point.
    """
    from advsample.structures import Batch

    rng = np.random.default_rng(seed)
    points = Batch.from_points(rng.uniform(box[0], box[1], size=(n, dim))).to_atoms()
    kept = []
    for atoms in points:
        result = oracle.label(atoms)
        if result.ok and (energy_max is None or result.energy < energy_max):
            kept.append(_labelled(atoms, result.energy, result.forces))
    return kept
