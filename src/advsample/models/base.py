"""What every energy model shares: per-element reference energies and an energy scale.

A model predicts E(X) = Σ_i ε_{Z_i} + s · f(X), where ε are per-element reference energies
(eV) fitted by least squares on the training set, s an energy scale (eV) and f the network.
Fitting ε and s from data lets the network learn O(1) numbers even on raw quantum-chemistry
energies of -1,500 eV per molecule.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from advsample.structures import Batch

N_ELEMENTS = 119  # atomic numbers 0..118; 0 is the toy "element"
DTYPES = {"float32": torch.float32, "float64": torch.float64}  # a model's compute precision


class EnergyModel(nn.Module, abc.ABC):
    """Base class: subclasses implement ``network(batch) -> [B]`` (dimensionless).

    ``forward(batch)`` returns energies [B] in eV. ``hyperparameters`` are what the
    constructor was called with, so a checkpoint rebuilds the model without pickled code.
    """

    def __init__(self, **hyperparameters):
        super().__init__()
        self.hyperparameters = dict(hyperparameters)
        self.register_buffer("element_energy", torch.zeros(N_ELEMENTS, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))

    @abc.abstractmethod
    def network(self, batch: Batch) -> torch.Tensor:
        """Dimensionless energy [B] before scaling and reference shift."""

    def reference_energy(self, batch: Batch) -> torch.Tensor:
        """Σ_i ε_{Z_i} per structure [B] (eV)."""
        ref = self.element_energy.to(batch.dtype)[batch.numbers]
        out = torch.zeros(batch.n_structures, dtype=batch.dtype, device=ref.device)
        return out.index_add(0, batch.structure, ref)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Energies [B] (eV): Σ_i ε_{Z_i} + s · network(batch)."""
        scale = self.energy_scale.to(batch.dtype)
        return self.reference_energy(batch) + scale * self.network(batch)

    @torch.no_grad()
    def fit_statistics(self, batch: Batch) -> None:
        """Set ε by least squares on the labelled ``batch`` and s from the residuals and forces."""
        reference, residual = fit_element_energies(batch)
        self.element_energy.copy_(reference)
        spread = residual.std() if residual.numel() > 1 else residual.new_tensor(1.0)
        if batch.forces is not None and batch.forces.numel():
            spread = torch.maximum(spread, batch.forces.pow(2).mean().sqrt())
        self.energy_scale.fill_(float(spread) if float(spread) > 1e-8 else 1.0)


def fit_element_energies(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares per-element energies ε [119] and the residual energies [B].

    Solves min_ε Σ_k (E_k − Σ_{i∈k} ε_{Z_i})² over the labelled structures; elements absent
    from ``batch`` get ε = 0. With one composition only this puts the mean energy on it.
    The small least-squares problem is solved in float64 on the CPU (torch's rank-revealing
    driver gelsd has no GPU version); both results are float64 on the batch's device.
    """
    if batch.energy is None:
        raise ValueError("fitting reference energies needs labelled energies")
    structure, numbers = batch.structure.cpu(), batch.numbers.cpu()
    counts = torch.zeros(batch.n_structures, N_ELEMENTS, dtype=torch.float64, device="cpu")
    counts.index_put_(
        (structure, numbers), torch.ones_like(structure, dtype=torch.float64), accumulate=True
    )
    present = counts.sum(0) > 0
    a = counts[:, present]
    e = batch.energy.detach().cpu().to(torch.float64)
    solution = torch.linalg.lstsq(a, e.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    eps = torch.zeros(N_ELEMENTS, dtype=torch.float64, device="cpu")
    eps[present] = solution
    return eps.to(batch.device), (e - a @ solution).to(batch.device)
