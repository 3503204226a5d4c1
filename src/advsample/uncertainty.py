"""Committee spread as uncertainty.

Per-atom force variance: σ²_i = (1/d) Σ_j Var_m F_{m,ij}, the population variance over the
M members (divisor M) averaged over the d Cartesian components, in (eV/Å)². A structure's
σ²_F reduces σ²_i over its atoms by mean (default), max or sum.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "max", "sum")


def atom_force_variance(forces: torch.Tensor) -> torch.Tensor:
    """forces [M, N, d] -> σ²_i [N] in (eV/Å)²."""
    return forces.var(dim=0, unbiased=False).mean(dim=-1)


def reduce_atoms(values: torch.Tensor, structure: torch.Tensor, n_structures: int,
                 reduce: str = "mean") -> torch.Tensor:
    """Per-atom values [N] -> per-structure [B] by ``reduce`` (mean, max or sum)."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    out = values.new_zeros(n_structures)
    if reduce == "max":
        return out.scatter_reduce(0, structure, values, reduce="amax", include_self=False)
    out = out.index_add(0, structure, values)
    if reduce == "mean":
        # counted by index_add, not bincount: shapes stay independent of the data, so that
        # torch.compile traces this as one graph (advsample.compiled)
        counts = values.new_zeros(n_structures).index_add(0, structure, torch.ones_like(values))
        out = out / counts.clamp_min(1)
    return out


def force_variance(forces: torch.Tensor, structure: torch.Tensor, n_structures: int,
                   reduce: str = "mean") -> torch.Tensor:
    """forces [M, N, d] -> σ²_F [B] (eV/Å)²."""
    return reduce_atoms(atom_force_variance(forces), structure, n_structures, reduce)


def energy_std(energy: torch.Tensor) -> torch.Tensor:
    """energy [M, B] -> committee standard deviation [B] (eV)."""
    return energy.std(dim=0, unbiased=False)
