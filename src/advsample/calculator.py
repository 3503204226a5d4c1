"""The committee as an ASE Calculator: mean energy and forces, plus the committee's spread.

``results`` holds, besides ``energy`` (eV) and ``forces`` (eV/Å, [n, 3]):
``energies`` [M] per member, ``forces_committee`` [M, n, 3], ``energy_std`` (eV),
``force_variance`` σ²_F of the structure ((eV/Å)², reduced by ``reduce``) and
``atom_force_variance`` [n]; for fully periodic cells also ``stress`` (eV/Å³, Voigt order
xx, yy, zz, yz, xz, xy) of the mean energy, (1/V) ∂Ē/∂ε at zero strain ε, and
``stress_committee`` [M, 6].

With a :class:`~advsample.calibration.Calibration` (level "atom"), ``results`` also holds
``atom_force_error_expected`` [n] (expected RMS force error s·σ_i, eV/Å),
``atom_force_error_bound`` [n] (conformal 1 − α bound q·σ_i, eV/Å) and ``force_error_bound``
(their largest, eV/Å). With ``safe_bound`` (eV/Å) a structure whose ``force_error_bound``
exceeds it (without a calibration: whose largest raw σ_i = sqrt(σ²_i) exceeds it) is unsafe:
the calculator warns (:class:`UnsafeStructureWarning`) or raises :class:`UnsafeStructure`, so
that an ASE MD driven by the committee stops before it produces garbage.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from advsample.calibration import Calibration, beside
from advsample.committee import Committee
from advsample.structures import Batch
from advsample.uncertainty import atom_force_variance, reduce_atoms

ON_UNSAFE = ("ignore", "warn", "raise")


class UnsafeStructure(RuntimeError):
    """Raised by :class:`CommitteeCalculator` (``on_unsafe="raise"``) for a structure outside
    the safe zone. ``value``: its force-error bound (or largest raw σ_i without a calibration),
    ``bound``: the safe bound, both eV/Å; ``results``: the calculator's results for it."""

    def __init__(self, message: str, value: float, bound: float, results: dict):
        super().__init__(message)
        self.value, self.bound, self.results = value, bound, results


class UnsafeStructureWarning(UserWarning):
    """Warned by :class:`CommitteeCalculator` (``on_unsafe="warn"``) for a structure outside
    the safe zone."""


class CommitteeCalculator(Calculator):
    """ASE calculator of a committee (a Committee or a checkpoint path): mean energy (eV) and forces
    [n, 3] (eV/Å), plus the committee's spread listed in the module docstring; ``reduce`` (mean,
    max, sum) reduces σ²_i over atoms to σ²_F. Stress only for fully periodic cells.

    calibration: a per-atom :class:`~advsample.calibration.Calibration` or the path of its JSON;
    when None and ``committee`` is a checkpoint path, ``calibration.json`` beside the checkpoint
    is loaded if it exists (``calibration_path`` says which file was used; False disables the
    look-up). safe_bound (eV/Å): the largest allowed ``force_error_bound`` (the conformal
    bound of the worst atom); without a calibration it applies to the raw largest σ_i =
    sqrt(σ²_i) instead, which is a committee spread, not an error estimate. on_unsafe: what to
    do above ``safe_bound``: "warn" (default; :class:`UnsafeStructureWarning`), "raise"
    (:class:`UnsafeStructure`; nothing is cached, so asking again recomputes and raises again)
    or "ignore". ``results["force_error_bound"]`` is the largest per-atom 1 − α bound: each
    atom is covered with probability about 1 − α, not all atoms of the structure at once.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, committee: Committee | str | Path, reduce: str = "mean",
                 calibration: Calibration | str | Path | bool | None = None,
                 safe_bound: float | None = None, on_unsafe: str = "warn", **kwargs):
        super().__init__(**kwargs)
        path = committee if isinstance(committee, (str, Path)) else None
        self.committee = Committee.load(path) if path is not None else committee
        self.committee.eval()
        self.reduce = reduce
        self.calibration_path: Path | None = None
        if calibration is None and path is not None and beside(path).is_file():
            calibration = beside(path)
        if isinstance(calibration, (str, Path)):
            self.calibration_path = Path(calibration)
            calibration = Calibration.load(calibration)
        if calibration is False:
            calibration = None
        if calibration is not None and calibration.level != "atom":
            raise ValueError(f"{self.calibration_path or 'calibration'}: level "
                             f"{calibration.level!r}; the calculator needs a per-atom "
                             "calibration (level 'atom')")
        self.calibration: Calibration | None = calibration
        if on_unsafe not in ON_UNSAFE:
            raise ValueError(f"on_unsafe must be one of {ON_UNSAFE}, got {on_unsafe!r}")
        if safe_bound is not None and not (math.isfinite(safe_bound) and safe_bound > 0):
            raise ValueError(f"safe_bound must be a positive number (eV/Å), got {safe_bound}")
        self.safe_bound = safe_bound
        self.on_unsafe = on_unsafe

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Evaluate on the committee's device; results are numpy arrays and floats. Then check
        the safe zone when ``safe_bound`` is set (may warn or raise :class:`UnsafeStructure`)."""
        super().calculate(atoms, properties, system_changes)
        batch = Batch.from_atoms([self.atoms], labels=False).to(device=self.committee.device)
        out = self.committee(batch)
        energies = out.energy.detach()[:, 0].cpu()  # [M] (eV)
        forces = out.forces.detach().cpu()  # [M, n, 3] (eV/Å)
        per_atom = atom_force_variance(forces)  # [n] (eV/Å)²
        structure = batch.structure.cpu()
        self.results = {
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "forces": forces.mean(0).numpy(),
            "energies": energies.numpy(),
            "forces_committee": forces.numpy(),
            "energy_std": float(energies.std(unbiased=False)),
            "atom_force_variance": per_atom.numpy(),
            "force_variance": float(reduce_atoms(per_atom, structure, 1, self.reduce)[0]),
        }
        sigma = np.sqrt(per_atom.double().numpy())  # [n] (eV/Å)
        if self.calibration is not None:
            bound = np.asarray(self.calibration.bound(sigma), dtype=float)
            self.results["atom_force_error_expected"] = self.calibration.expected_error(sigma)
            self.results["atom_force_error_bound"] = bound
            self.results["force_error_bound"] = float(bound.max())
        if self.atoms.pbc.all():
            stress = committee_stress(self.committee, batch)[:, 0].cpu()  # [M, 6]
            self.results["stress_committee"] = stress.numpy()
            self.results["stress"] = stress.mean(0).numpy()
        if self.safe_bound is not None and self.on_unsafe != "ignore":
            self._check_safe(sigma)

    def _check_safe(self, sigma: np.ndarray) -> None:
        """Warn or raise when this structure's bound (or largest raw σ_i) exceeds safe_bound."""
        if self.calibration is not None:
            value = self.results["force_error_bound"]
            what = (f"calibrated {1 - self.calibration.alpha:.0%} force-error bound "
                    f"{value:.4g} eV/Å")
        else:
            value = float(sigma.max())
            what = f"largest committee force spread σ_i {value:.4g} eV/Å (uncalibrated)"
        if value <= self.safe_bound:  # NaN compares False: unsafe
            return
        atom = int(np.nanargmax(sigma)) if np.isfinite(sigma).any() else 0
        message = (f"structure outside the safe zone: {what} exceeds the safe bound "
                   f"{self.safe_bound:.4g} eV/Å (worst atom {atom})")
        if self.on_unsafe == "raise":
            results = self.results
            self.reset()  # nothing cached: asking again recomputes and raises again
            raise UnsafeStructure(message, value, self.safe_bound, results)
        warnings.warn(message, UnsafeStructureWarning, stacklevel=2)


def committee_stress(committee: Committee, batch: Batch) -> torch.Tensor:
    """Stress of every member for periodic structures, [M, B, 6] in eV/Å³ (Voigt order)."""
    from advsample.attack import deformed

    strain = batch.positions.new_zeros(batch.n_structures, 3, 3, requires_grad=True)
    with torch.enable_grad():
        energy = committee(deformed(batch, torch.zeros_like(batch.positions), strain),
                           forces=False).energy  # [M, B]
        rows = [torch.autograd.grad(e.sum(), strain, retain_graph=True)[0] for e in energy]
    volume = torch.linalg.det(batch.cell).abs()  # [B]
    sigma = torch.stack(rows) / volume[None, :, None, None]  # [M, B, 3, 3]
    voigt = torch.tensor([[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], device=sigma.device)
    return sigma[..., voigt[0], voigt[1]].detach()


def predict(committee: Committee, atoms_list, chunk: int = 2048) -> tuple[torch.Tensor, ...]:
    """Committee-mean energies [B] (eV) and force variances σ²_F [B] ((eV/Å)²) of many
    structures at once, computed on the committee's device and returned on the CPU."""
    committee.eval()
    energies, variances = [], []
    batch = Batch.from_atoms(atoms_list, labels=False).to(device=committee.device)
    for start in range(0, batch.n_structures, chunk):
        part = batch.select(torch.arange(start, min(start + chunk, batch.n_structures),
                                         device=batch.device))
        out = committee(part)
        energies.append(out.mean_energy.detach())
        per_atom = atom_force_variance(out.forces.detach())
        variances.append(reduce_atoms(per_atom, part.structure, part.n_structures))
    return torch.cat(energies).cpu(), torch.cat(variances).cpu()
