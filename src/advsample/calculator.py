"""The committee as an ASE Calculator: mean energy and forces, plus the committee's spread.

``results`` holds, besides ``energy`` (eV) and ``forces`` (eV/Å, [n, 3]):
``energies`` [M] per member, ``forces_committee`` [M, n, 3], ``energy_std`` (eV),
``force_variance`` σ²_F of the structure ((eV/Å)², reduced by ``reduce``) and
``atom_force_variance`` [n]; for fully periodic cells also ``stress`` (eV/Å³, Voigt order
xx, yy, zz, yz, xz, xy) of the mean energy, (1/V) ∂Ē/∂ε at zero strain ε, and
``stress_committee`` [M, 6].
"""

from __future__ import annotations

import torch
from ase.calculators.calculator import Calculator, all_changes

from advsample.committee import Committee
from advsample.structures import Batch
from advsample.uncertainty import atom_force_variance, reduce_atoms


class CommitteeCalculator(Calculator):
    """ASE calculator of a committee (a Committee or a checkpoint path): mean energy (eV) and forces
    [n, 3] (eV/Å), plus the committee's spread listed in the module docstring; ``reduce`` (mean,
    max, sum) reduces σ²_i over atoms to σ²_F. Stress only for fully periodic cells.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, committee: Committee | str, reduce: str = "mean", **kwargs):
        super().__init__(**kwargs)
        self.committee = Committee.load(committee) if isinstance(committee, str) else committee
        self.committee.eval()
        self.reduce = reduce

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Evaluate on the committee's device; results are numpy arrays and floats."""
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
        if self.atoms.pbc.all():
            stress = committee_stress(self.committee, batch)[:, 0].cpu()  # [M, 6]
            self.results["stress_committee"] = stress.numpy()
            self.results["stress"] = stress.mean(0).numpy()


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
