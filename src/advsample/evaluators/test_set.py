"""Errors of the committee mean on a labelled test set, and how well σ ranks them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from scipy.stats import spearmanr

from advsample.evaluators.predictions import predict
from advsample.structures import Batch


@dataclass
class TestSetEvaluator:
    """Energy and force errors on the structures of an extxyz file with oracle labels.

    Metrics: energy RMSE/MAE per atom (eV/atom), force-component RMSE/MAE (eV/Å), both per
    element too; mean predicted σ_F = sqrt(σ²_F) (eV/Å); Spearman rank correlation of each
    structure's σ_F with its true force error (RMS over its atoms' components); per-structure
    σ_F and error lists for the report's scatter plot.
    """

    __test__ = False  # not a pytest class

    structures: list  # ase.Atoms with energy (eV) and forces [n, 3] (eV/Å)
    name: str = "test_set"
    reduce: str = "mean"
    dim: int = 3
    type: str = "test_set"

    def evaluate(self, context) -> dict:
        """Metrics of the class docstring for ``context.committee``: energy errors per atom
        (eV/atom), force-component errors (eV/Å), also per element, mean σ_F (eV/Å), Spearman ρ(σ_F,
        error) and the per-structure lists [B].
        """
        data = Batch.from_atoms(self.structures, dim=self.dim).to(device=context.device)
        pred = predict(context.committee, data, self.reduce)
        n_atoms = data.n_atoms.cpu().numpy()
        structure = data.structure.cpu().numpy()
        de = (pred.energy - data.energy.cpu().numpy()) / n_atoms  # [B] eV/atom
        df = pred.forces - data.forces.cpu().numpy()  # [N, d]
        error = np.sqrt(np.bincount(structure, (df**2).mean(1)) / n_atoms)  # [B] eV/Å
        sigma = np.sqrt(pred.variance)
        numbers = data.numbers.cpu().numpy()
        per_element = {}
        for z in np.unique(numbers):
            f = df[numbers == z]
            per_element[chemical_symbols[z]] = {"forces_rmse": _rms(f),
                                                "forces_mae": float(np.abs(f).mean())}
        rho = spearmanr(sigma, error).statistic if len(sigma) > 2 else float("nan")
        return {"type": self.type, "structures": data.n_structures,
                "energy_rmse": _rms(de), "energy_mae": float(np.abs(de).mean()),
                "forces_rmse": _rms(df), "forces_mae": float(np.abs(df).mean()),
                "per_element": per_element, "mean_sigma": float(sigma.mean()),
                "sigma_error_spearman": float(rho),
                "sigma": sigma.tolist(), "error": error.tolist()}


def load_test_set(path: str | Path) -> list:
    """Labelled structures of an extxyz file (validated; errors name the file and frame)."""
    from advsample.store import read_extxyz
    from advsample.validation import validate_atoms

    atoms = read_extxyz(path)
    validate_atoms(atoms, str(path), require_labels=True)
    return atoms


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def plot(entries: list[tuple[int, dict]], ax_errors, ax_scatter) -> None:
    """Force RMSE and σ-error correlation per generation; σ vs error of the last generation."""
    gens = [g for g, _ in entries]
    ax_errors.plot(gens, [m["forces_rmse"] for _, m in entries], "o-", label="force RMSE (eV/Å)")
    ax_errors.plot(gens, [m["mean_sigma"] for _, m in entries], "s--", label="mean σ_F (eV/Å)")
    ax_errors.set_yscale("log")
    twin = ax_errors.twinx()
    twin.plot(gens, [m["sigma_error_spearman"] for _, m in entries], "^:", color="tab:green")
    twin.set_ylabel("Spearman ρ(σ, error)", color="tab:green")
    twin.set_ylim(-1, 1)
    ax_errors.set_xlabel("generation")
    ax_errors.legend(fontsize=7)
    g, last = entries[-1]
    ax_scatter.loglog(last["sigma"], last["error"], ".", alpha=0.6)
    ax_scatter.set_xlabel("predicted σ_F (eV/Å)")
    ax_scatter.set_ylabel("true force error (eV/Å)")
    ax_scatter.set_title(f"generation {g}: ρ = {last['sigma_error_spearman']:.2f}")
