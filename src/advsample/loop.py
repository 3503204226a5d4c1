"""Active-learning generations: train -> sample -> select -> label -> retrain.

``sample_generation`` is the one step every loop shares (propose candidates from the
training structures, gate and select them). ``run_analytic_loop`` runs whole loops on the
analytic surfaces in memory, for the toy benchmarks; the molecular, resumable loop with a
store and an executor lives in ``advsample.run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from advsample.attack import AttackConfig, BoltzmannPrior, Candidates
from advsample.committee import Committee
from advsample.oracles.analytic import AnalyticSurface, DoubleWell2D
from advsample.samplers import SAMPLERS
from advsample.select import SelectConfig, gate_threshold, select
from advsample.structures import Batch, concatenate
from advsample.train import TrainConfig, fit


@dataclass
class GenerationSample:
    """What one generation's sampling produced: every candidate, the gate, the picks."""

    candidates: Candidates
    threshold: float
    chosen: torch.Tensor  # long [n_chosen], indices into candidates


def sample_generation(committee: Committee, training: Batch, sampler, kT: float,
                      select_cfg: SelectConfig, seeds: Batch | None = None) -> GenerationSample:
    """Propose from ``seeds`` (default: every training structure), then gate and select.

    Q of the Boltzmann prior, the gate and de-duplication always use the whole training set.
    """
    prior = BoltzmannPrior.from_training(training, kT)
    seeds = training if seeds is None else seeds
    candidates = sampler.propose(committee, seeds.without_labels(), prior)
    threshold = gate_threshold(committee, training, select_cfg)
    chosen = select(candidates, training, threshold, select_cfg)
    return GenerationSample(candidates, threshold, chosen)


@dataclass
class AnalyticLoopConfig:
    """A loop on an analytic surface (defaults: the paper's 2D double well, METHOD.md §7).

    Generation 1 is the committee trained on the initial data; each later generation adds
    at most ``select.max_new`` points. ``random_scale`` is the std of the random baseline's
    Gaussian displacements.
    """

    sampler: str = "attack"
    generations: int = 7
    n_initial: int = 800
    initial_energy_max: float = -2.0
    committee_size: int = 5
    model: dict = field(default_factory=lambda: {"width": 64, "depth": 3})
    kT: float = 5.0
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(
        steps=300, lr=0.01, init_scale=0.01, remove_translation=False))
    select: SelectConfig = field(default_factory=SelectConfig)
    random_scale: float = 0.3
    grid_resolution: int = 100
    seed: int = 0


def initial_points(surface: AnalyticSurface, n: int, energy_max: float, seed: int) -> Batch:
    """``n`` uniform points in the box, keeping those with true energy below ``energy_max``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(*surface.box, size=(n, surface.dim))
    x = x[surface.energy(x) < energy_max]
    return surface.label(Batch.from_points(x))


def make_sampler(cfg: AnalyticLoopConfig, generation: int):
    attack_cfg = replace(cfg.attack, seed=cfg.seed * 1000 + generation)
    if cfg.sampler == "attack":
        return SAMPLERS["attack"](config=attack_cfg)
    if cfg.sampler == "random":
        return SAMPLERS["random"](scale=cfg.random_scale, config=attack_cfg)
    if cfg.sampler == "uniform":
        return SAMPLERS["uniform"](config=attack_cfg)
    raise ValueError(f"sampler must be attack, random or uniform, got {cfg.sampler!r}")


def grid_errors(committee: Committee, surface: AnalyticSurface, resolution: int) -> dict:
    """Energy RMSE of the committee mean on a regular grid, overall and where E_true < 0."""
    grid = surface.grid(resolution)
    truth = surface.energy(grid)
    with torch.no_grad():
        pred = committee(Batch.from_points(grid), forces=False).mean_energy.numpy()
    err = pred - truth
    low = truth < 0
    return {
        "rmse_grid": float(np.sqrt(np.mean(err**2))),
        "rmse_low": float(np.sqrt(np.mean(err[low] ** 2))),
    }


def run_analytic_loop(cfg: AnalyticLoopConfig, surface: AnalyticSurface | None = None,
                      keep_committees: bool = False) -> list[dict]:
    """Run ``cfg.generations`` generations; one dict of metrics per generation.

    Each dict: generation, n_points, rmse_grid, rmse_low, sampled_energy (median true energy
    of the points added to reach this generation; nan for generation 1), n_new, threshold,
    the new points and their displacements from their seeds, and (with keep_committees) the
    committee and the training points.
    """
    surface = surface or DoubleWell2D()
    if cfg.attack.box is None:
        cfg.attack.box = surface.box
    training = initial_points(surface, cfg.n_initial, cfg.initial_energy_max, cfg.seed)
    metrics: list[dict] = []
    new_points = np.zeros((0, surface.dim))
    new_energies = np.zeros(0)
    new_displacements = np.zeros(0)
    threshold = float("nan")
    for generation in range(1, cfg.generations + 1):
        committee = Committee.build("mlp", cfg.committee_size, seed=cfg.seed * 100 + generation,
                                    dim=surface.dim, **cfg.model)
        train_cfg = replace(cfg.train, seed=cfg.seed * 100 + generation)
        result = fit(committee, training, train_cfg)
        row = {
            "generation": generation,
            "n_points": training.n_structures,
            "n_new": len(new_points),
            "sampled_energy": float(np.median(new_energies)) if len(new_energies) else
            float("nan"),
            "new_points": new_points.tolist(),
            "new_displacements": new_displacements.tolist(),
            "threshold": threshold,
            "val_energy_rmse": result.val_energy_rmse,
            **grid_errors(committee, surface, cfg.grid_resolution),
        }
        if keep_committees:
            row["committee"] = committee
            row["training_points"] = training.positions.numpy().copy()
        metrics.append(row)
        if generation == cfg.generations:
            break
        sample = sample_generation(committee, training, make_sampler(cfg, generation), cfg.kT,
                                   cfg.select)
        threshold = sample.threshold
        chosen = surface.label(sample.candidates.batch.select(sample.chosen))
        new_displacements = sample.candidates.displacement[sample.chosen].numpy()
        new_points = chosen.positions.numpy()
        new_energies = chosen.energy.numpy()
        if chosen.n_structures:
            training = concatenate([training, chosen])
    return metrics
