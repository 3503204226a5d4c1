"""Initial training data for a system that has none, generated with the oracle itself.

Two recipes around a starting geometry (ideally a minimum): Langevin molecular dynamics
driven by the oracle, and displacements along the harmonic normal modes with Boltzmann
amplitudes. Both return ``ase.Atoms`` carrying the oracle's energy (eV) and forces [n, 3]
(eV/Å) in a SinglePointCalculator: train on them directly, or write them with ``ase.io.write``
(extxyz) and load them with :meth:`advsample.store.Store.import_extxyz`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

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
    checkpoint: str | os.PathLike | None = None,
    on_frame: Callable[[int, Atoms], None] | None = None,
    calculator=None,
) -> list[Atoms]:
    """Frames of a Langevin (NVT) trajectory on the oracle's potential-energy surface.

    Velocities start from a Maxwell-Boltzmann distribution at ``temperature_K`` (net momentum
    and, for molecules, rotation removed; the centre of mass stays fixed); the thermostat's
    friction is ``friction_per_fs`` (1/fs). A frame is kept at step 0 and every ``interval``
    steps, ``steps // interval + 1`` frames, labelled with the energy and forces the dynamics
    computed anyway. An oracle failure ends the run with its exception (an ASE
    ``CalculationFailed`` or similar).

    checkpoint: a file (.npz) replaced atomically after every step with the trajectory's
    state (positions, momenta, forces, energy, step, frames kept, the thermostat's random
    state). When it exists the trajectory continues from it exactly as if never stopped, and
    the oracle is not called again for the geometry it holds. on_frame(k, frame) is called
    for each kept frame k (from 0) once the checkpoint holding it is written; after a restart
    it is offered the checkpoint's own frame again when that step was a kept one, so a caller
    that commits frames skips an index it already has. calculator: the ASE calculator that
    runs the oracle (default ``oracle.calculator()``). Returns the frames kept by this call.
    """
    if steps < 0 or interval < 1:
        raise ValueError("steps must be >= 0 and interval >= 1")
    rng = np.random.default_rng(seed)
    work = atoms.copy()
    work.set_constraint([*work.constraints, FixCom()])
    work.calc = oracle.calculator() if calculator is None else calculator
    path = None if checkpoint is None else Path(checkpoint)
    state = _read_md_state(path) if path is not None and path.exists() else None
    if state is None:
        kT = units.kB * temperature_K
        work.set_momenta(rng.normal(size=(len(work), 3))
                         * np.sqrt(work.get_masses()[:, None] * kT))
        Stationary(work)
        if not work.pbc.any():
            ZeroRotation(work)
    else:
        work.set_positions(state["positions"], apply_constraint=False)
        work.set_momenta(state["momenta"], apply_constraint=False)
        rng.bit_generator.state = json.loads(str(state["rng"]))
    dynamics = Langevin(work, timestep=timestep_fs * units.fs, temperature_K=temperature_K,
                        friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    frames: list[Atoms] = []

    def keep(k: int, energy: float, raw_forces: np.ndarray) -> None:
        """Hand over kept frame k with its raw labels (not FixCom's forces)."""
        frames.append(_labelled(work, energy, raw_forces))
        if on_frame is not None:
            on_frame(k, frames[-1])

    if state is None:
        step, kept = 0, 1
        forces = work.get_forces(md=True)
        energy, raw = work.get_potential_energy(), work.get_forces(apply_constraint=False)
        _write_md_state(path, work, forces, energy, raw, step, kept, rng)
        keep(0, energy, raw)
    else:
        step, kept, forces = int(state["step"]), int(state["kept"]), state["forces"]
        if step % interval == 0:
            keep(kept - 1, float(state["energy"]), state["raw_forces"])
    while step < steps:
        forces = dynamics.step(forces)
        step += 1
        energy, raw = work.get_potential_energy(), work.get_forces(apply_constraint=False)
        kept += step % interval == 0
        _write_md_state(path, work, forces, energy, raw, step, kept, rng)
        if step % interval == 0:
            keep(kept - 1, energy, raw)
    return frames


def _write_md_state(path: Path | None, work: Atoms, forces: np.ndarray, energy: float,
                    raw_forces: np.ndarray, step: int, kept: int, rng) -> None:
    """Replace the MD checkpoint at ``path`` (nothing when None) with the current state."""
    if path is None:
        return
    with open(path.with_suffix(".tmp.npz"), "wb") as handle:
        np.savez(handle, positions=work.positions, momenta=work.get_momenta(), forces=forces,
                 energy=energy, raw_forces=raw_forces, step=step, kept=kept,
                 rng=json.dumps(rng.bit_generator.state))
    os.replace(path.with_suffix(".tmp.npz"), path)


def _read_md_state(path: Path) -> dict:
    """The arrays of an MD checkpoint written by :func:`_write_md_state`."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def normal_mode_sampling(
    atoms: Atoms,
    oracle: Oracle,
    temperature_K: float,
    n_samples: int,
    seed: int = 0,
    step: float = 0.01,
    min_wavenumber: float = 50.0,
) -> list[Atoms]:
    """The structures of :func:`normal_mode_displacements`, labelled by the oracle. Samples
    whose label fails are dropped with a warning, so fewer than ``n_samples`` may come back.
    """
    samples = []
    for k, candidate in enumerate(normal_mode_displacements(
            atoms, oracle, temperature_K, n_samples, seed, step, min_wavenumber)):
        result = oracle.label(candidate)
        if result.ok:
            samples.append(_labelled(candidate, result.energy, result.forces))
        else:
            warnings.warn(f"normal-mode sample {k} dropped: {result.message}", stacklevel=2)
    return samples


def normal_mode_displacements(
    atoms: Atoms,
    oracle: Oracle,
    temperature_K: float,
    n_samples: int,
    seed: int = 0,
    step: float = 0.01,
    min_wavenumber: float = 50.0,
    hessian_cache: str | os.PathLike | None = None,
) -> list[Atoms]:
    """Unlabelled copies of ``atoms`` displaced along its normal modes with classical
    Boltzmann amplitudes; the same for the same arguments.

    The Hessian [3n, 3n] (eV/Å²) comes from central differences of the oracle's forces
    (displacements ``step`` Å, 6n force calls; ``hessian_cache``: see
    :func:`finite_difference_hessian`). Rigid translations (and, for molecules, rotations)
    are projected out of the mass-weighted Hessian; each remaining mode k with eigenvalue λ_k
    (eV/(Å² amu)) and wavenumber >= ``min_wavenumber`` (cm⁻¹) gets a mass-weighted
    coordinate q_k ~ N(0, k_B T / λ_k), the harmonic Boltzmann distribution. Softer and
    imaginary modes are not displaced.
    """
    rng = np.random.default_rng(seed)
    masses = np.repeat(atoms.get_masses(), 3)  # [3n] amu
    hessian = finite_difference_hessian(atoms, oracle, step, hessian_cache)
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
    out = []
    for displacement in displacements:
        candidate = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                          pbc=atoms.pbc)
        candidate.positions += displacement.reshape(-1, 3)
        out.append(candidate)
    return out


def finite_difference_hessian(atoms: Atoms, oracle: Oracle, step: float = 0.01,
                              cache: str | os.PathLike | None = None) -> np.ndarray:
    """Symmetrised Hessian [3n, 3n] (eV/Å²) from central differences of the oracle's forces
    with displacements of ``step`` Å.

    cache: a file (.npz) replaced after every force call with the forces computed so far, so
    an interrupted computation resumes without repeating a call (it must belong to the same
    structure and step: a mismatch raises ValueError).
    """
    work = atoms.copy()
    work.calc = oracle.calculator()
    reference = work.get_positions()
    n = 3 * len(work)
    forces = np.full((n, 2, n), np.nan)  # [column, +/-, 3n force components]
    path = None if cache is None else Path(cache)
    if path is not None and path.exists():
        with np.load(path) as data:
            if not (np.array_equal(data["positions"], reference) and data["step"] == step):
                raise ValueError(f"{path}: Hessian cache of another structure or step")
            forces = data["forces"]
    for column in range(n):
        for side, sign in enumerate((1.0, -1.0)):
            if not np.isnan(forces[column, side]).any():
                continue
            shifted = reference.copy()
            shifted.flat[column] += sign * step
            work.set_positions(shifted)
            forces[column, side] = work.get_forces(apply_constraint=False).ravel()
            if path is not None:
                with open(path.with_suffix(".tmp.npz"), "wb") as handle:
                    np.savez(handle, positions=reference, step=step, forces=forces)
                os.replace(path.with_suffix(".tmp.npz"), path)
    hessian = -(forces[:, 0] - forces[:, 1]).T / (2 * step)
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
