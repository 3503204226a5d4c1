"""The uncertainty-biased MD sampler (UDD-AL): bias formula, bias forces, zero-bias limit, effect.

Checked: the bias energy is A [exp(−σ²_E / (M N_A B²)) − 1] with σ²_E the population variance
of the members' energies and A per atom or total (hand-computed values); the biased forces are
minus the finite-difference gradient of Ē + E_bias (float64 PaiNN committee, NH3 and CH4 of
different sizes in one batch, per-atom and total strength); at zero strength the sampler
reproduces the plain MD sampler's candidates bit for bit (toy and NH3, with trajectories cut
by the trust bound or the sanity filters); with a strong bias the frames are more uncertain
than plain MD's from the same seeds, on committees trained briefly (on the paper's NH3 frames:
σ²_F and σ²_E; on EMT-labelled rattled NH3: σ²_E, the quantity the bias acts on).
"""

from __future__ import annotations

import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from helpers import FD_TOL, labelled_nh3

from advsample.attack import AttackConfig, BoltzmannPrior, score
from advsample.committee import Committee
from advsample.dynamics import committee_forces
from advsample.samplers import SAMPLERS
from advsample.samplers.biased_md import BiasedMDSampler, bias_energy, biased_committee_forces
from advsample.samplers.md import MDSampler
from advsample.structures import Batch
from advsample.train import TrainConfig, fit

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def energy_variance(committee: Committee, batch: Batch) -> torch.Tensor:
    """σ²_E [B] (eV²): population variance of the members' energies."""
    with torch.no_grad():
        return committee(batch, forces=False).energy.var(0, unbiased=False)


def test_bias_energy_matches_the_formula_by_hand():
    energy = torch.tensor([[1.0, -2.0], [1.3, -2.5], [0.4, -2.1]], dtype=torch.float64)
    n_atoms = torch.tensor([4, 7])
    strength, width = 0.2, 0.05
    expected = []
    for b in range(2):
        e = energy[:, b].numpy()
        var = ((e - e.mean()) ** 2).mean()  # 1/M, not 1/(M − 1)
        s = var / (3 * int(n_atoms[b]) * width**2)
        expected.append(math.expm1(-s))
    expected = torch.tensor(expected, dtype=torch.float64)
    per_atom = bias_energy(energy, n_atoms, strength, width, per_atom=True)
    total = bias_energy(energy, n_atoms, strength, width, per_atom=False)
    torch.testing.assert_close(per_atom, strength * n_atoms.double() * expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(total, strength * expected, rtol=1e-12, atol=0)
    assert (total < 0).all() and (total > -strength).all()  # lowered, bounded by A
    agree = bias_energy(energy[:1].expand(3, 2), n_atoms, strength, width)
    assert (agree == 0).all()  # no disagreement, no bias


@pytest.mark.parametrize("per_atom", [True, False])
def test_bias_forces_are_minus_the_gradient_of_the_bias_energy(per_atom):
    committee = Committee.build("painn", 3, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                                dtype="float64")
    rng = np.random.default_rng(1)
    frames = [molecule("NH3"), molecule("CH4")]
    for a in frames:
        a.positions += rng.normal(0, 0.1, a.positions.shape)
    batch = Batch.from_atoms(frames, labels=False)
    # a width at which s = σ²_E / (M N_A B²) is of order one: the bias neither flat nor saturated
    width = float((energy_variance(committee, batch) / (3 * batch.n_atoms)).mean().sqrt())
    strength = 0.3
    forces_fn = biased_committee_forces(committee, strength, width, per_atom=per_atom)
    energy, forces = forces_fn(batch)
    out = committee(batch, forces=True)

    def biased(positions):
        """Ē + E_bias summed over structures (eV)."""
        with torch.no_grad():
            e = committee(batch.with_positions(positions), forces=False).energy
        return float((e.mean(0) + bias_energy(e, batch.n_atoms, strength, width, per_atom))
                     .sum())

    torch.testing.assert_close(
        energy, (out.mean_energy + bias_energy(out.energy, batch.n_atoms, strength, width,
                                               per_atom)).detach(), rtol=1e-12, atol=1e-12)
    fd = torch.zeros_like(batch.positions)
    h = 1e-5
    for i in range(fd.shape[0]):
        for j in range(3):
            step = torch.zeros_like(batch.positions)
            step[i, j] = h
            fd[i, j] = (biased(batch.positions + step) - biased(batch.positions - step)) / (2 * h)
    tol = FD_TOL[torch.float64]
    torch.testing.assert_close(forces, -fd, rtol=1e-5, atol=tol)
    bias_force = forces - out.mean_forces.detach()
    assert bias_force.abs().max() > 100 * tol  # the bias term is really tested
    torch.testing.assert_close(bias_force, -fd - out.mean_forces.detach(), rtol=1e-5, atol=tol)
    # the bias pulls up the committee's disagreement: moving along F_bias raises σ²_E
    moved = batch.with_positions(batch.positions + 1e-3 * bias_force)
    assert (energy_variance(committee, moved) > energy_variance(committee, batch)).all()


def test_zero_strength_is_plain_md_bit_for_bit():
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                                dtype="float64")
    batch = Batch.from_atoms([molecule("NH3")], labels=False)
    plain_fn, biased_fn = committee_forces(committee), biased_committee_forces(committee, 0.0,
                                                                               0.01)
    for a, b in zip(plain_fn(batch), biased_fn(batch), strict=True):
        assert torch.equal(a, b)


def _toy():
    """A random 3-member MLP committee on 2D points, its prior and 6 seeds."""
    committee = Committee.build("mlp", 3, dim=2, width=16, depth=2)
    rng = np.random.default_rng(0)
    training = Batch.from_points(rng.uniform(-1, 1, (20, 2)), energy=rng.normal(0, 0.1, 20))
    return committee, BoltzmannPrior.from_training(training, kT=0.1), \
        Batch.from_points(rng.uniform(-0.5, 0.5, (6, 2)))


def _nh3():
    """A random 2-member float64 PaiNN committee, a prior and one NH3 seed."""
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                                dtype="float64")
    training = Batch.from_atoms([molecule("NH3")] * 2, labels=False)
    training.energy = torch.tensor([0.0, 0.1], dtype=torch.float64)
    return committee, BoltzmannPrior.from_training(training, kT=0.1), \
        Batch.from_atoms([molecule("NH3")], labels=False)


@pytest.mark.parametrize("system", ["toy", "nh3"])
def test_zero_bias_reproduces_the_md_sampler(system):
    if system == "toy":
        committee, prior, seeds = _toy()
        settings = dict(temperature_K=2000.0, steps=200, dt_fs=1.0, friction_per_fs=0.02,
                        interval=10, max_uncertainty=None, config=AttackConfig(seed=7, restarts=2))
        free = MDSampler(**settings).propose(committee, seeds, prior)
        settings["max_uncertainty"] = float(free.uncertainty.quantile(0.6))  # cut some runs
    else:
        committee, prior, seeds = _nh3()
        settings = dict(temperature_K=1500.0, steps=100, dt_fs=0.5, interval=5,
                        config=AttackConfig(restarts=8, min_distance=0.95, seed=1))
    plain = MDSampler(**settings).propose(committee, seeds, prior)
    biased = BiasedMDSampler(bias_strength=0.0, **settings).propose(committee, seeds, prior)
    assert 0 < len(plain) < settings["config"].restarts * seeds.n_structures * (
        settings["steps"] // settings["interval"])  # some trajectories were stopped
    for key in ("objective", "uncertainty", "energy", "parent", "step", "displacement"):
        assert torch.equal(getattr(biased, key), getattr(plain, key)), key
    assert torch.equal(biased.batch.positions, plain.batch.positions)
    assert torch.equal(biased.batch.structure, plain.batch.structure)


def test_strong_bias_samples_more_uncertain_frames_on_paper_nh3():
    # 24 of the paper's frames (the pyramidal well up toward the barrier), a small committee
    # fitted for a few seconds: its energy spread along plain 300 K MD is σ_E ≈ 0.03 eV, so
    # B = 0.01 eV sits where the bias pulls hardest; A = 0.3 eV/atom is a strong bias.
    frames = ase.io.read(SHARED / "ammonia_paper.extxyz", ":")[::5][:24]
    committee, prior, plain, biased = _plain_and_biased_md(Batch.from_atoms(frames), 0.01,
                                                           epochs=250)
    assert len(plain) == 4 * 2 * 20 and len(biased) > 100
    assert biased.uncertainty.mean() > 2 * plain.uncertainty.mean()  # σ²_F, the selection's
    assert (energy_variance(committee, biased.batch).mean()
            > 2 * energy_variance(committee, plain.batch).mean())
    # scores are those of the unbiased committee, as for every sampler
    objective, variance, energy = score(committee, biased.batch, prior)
    torch.testing.assert_close(biased.objective, objective.detach())
    torch.testing.assert_close(biased.uncertainty, variance.detach())
    torch.testing.assert_close(biased.energy, energy.detach())


def test_strong_bias_raises_the_energy_spread_along_emt_nh3_md():
    # NH3 rattled by 0.05 Å only: plain 300 K MD already leaves the data (σ²_E grows 10-1000x
    # from the seeds), and there the energy-variance bias raises σ²_E but not reliably σ²_F.
    committee, prior, plain, biased = _plain_and_biased_md(
        Batch.from_atoms(labelled_nh3(16, seed=2)), 0.03, epochs=200, seed=2)
    assert len(plain) > 100 and len(biased) > 100
    assert (energy_variance(committee, biased.batch).mean()
            > 1.5 * energy_variance(committee, plain.batch).mean())


def test_settings_units_and_registration():
    assert SAMPLERS["biased_md"] is BiasedMDSampler
    sampler = BiasedMDSampler()
    assert sampler.name == "biased_md"
    assert (sampler.bias_strength, sampler.bias_units, sampler.bias_width,
            sampler.bias_width_units) == (5.0, "kT", 2.0, "seeds")
    strength, per_atom = sampler.bias_amplitude()  # the whole structure's depth, in k_B T
    assert not per_atom and strength == pytest.approx(5.0 * units.kB * 300.0)
    hot = BiasedMDSampler(temperature_K=600.0, bias_strength=2.0, bias_units="kT/atom")
    strength, per_atom = hot.bias_amplitude()
    assert per_atom and strength == pytest.approx(2.0 * units.kB * 600.0)
    assert BiasedMDSampler(bias_strength=0.5, bias_units="eV").bias_amplitude() == (0.5, False)
    assert BiasedMDSampler(bias_strength=0.1, bias_units="eV/atom").bias_amplitude() == (0.1,
                                                                                         True)
    for bad in (dict(bias_units="kcal"), dict(bias_strength=-0.1), dict(bias_width=0.0),
                dict(bias_width_units="kT")):
        with pytest.raises(ValueError):
            BiasedMDSampler(**bad)


def test_width_relative_to_the_seeds_spread():
    # B² = width² ⟨σ²_E / (M N_A)⟩ over the seeds, so s = σ²_E / (M N_A B²) averages
    # 1 / width² over them, whatever the committee's energy scale
    committee = Committee.build("painn", 3, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                                dtype="float64")
    rng = np.random.default_rng(3)
    frames = [molecule("NH3"), molecule("CH4"), molecule("H2O")]
    for a in frames:
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    seeds = Batch.from_atoms(frames, labels=False)
    with torch.no_grad():
        energy = committee(seeds, forces=False).energy.numpy()  # [M, B]
    by_hand = np.mean(energy.var(0) / (3 * np.array([4, 5, 3])))
    sampler = BiasedMDSampler(bias_width=2.0)
    width = sampler.width_eV(committee, seeds)
    assert width == pytest.approx(2.0 * np.sqrt(by_hand), rel=1e-6)
    s = energy_variance(committee, seeds) / (3 * seeds.n_atoms * width**2)
    assert float(s.mean()) == pytest.approx(1 / 2.0**2, rel=1e-6)
    assert BiasedMDSampler(bias_width=0.02, bias_width_units="eV").width_eV(committee,
                                                                           seeds) == 0.02
    twins = Committee.build("painn", 1, features=8, interactions=1, cutoff=3.0, n_rbf=6)
    with pytest.raises(ValueError, match="give the width in eV"):
        sampler.width_eV(twins, seeds)  # one member: no spread


def _plain_and_biased_md(data, width: float, epochs: int, seed: int = 0):
    """(committee, prior, plain MD candidates, biased MD candidates): a small float64 PaiNN
    committee fitted on ``data``, then 200 steps of 300 K MD from its first 4 structures (x2
    restarts), plain and with bias strength 0.3 eV/atom and width ``width`` (eV)."""
    committee = Committee.build("painn", 3, seed=seed, features=8, interactions=1, cutoff=3.0,
                                n_rbf=6, dtype="float64")
    fit(committee, data, TrainConfig(epochs=epochs, patience=1000, forces_weight=1.0, lr=0.01,
                                     seed=seed))
    prior = BoltzmannPrior.from_training(data, 0.05)
    seeds = data.without_labels().select(torch.arange(4))
    settings = dict(temperature_K=300.0, steps=200, dt_fs=0.5, interval=10,
                    config=AttackConfig(restarts=2, seed=5, min_distance=0.7))
    plain = MDSampler(**settings).propose(committee, seeds, prior)
    biased = BiasedMDSampler(bias_strength=0.3, bias_units="eV/atom", bias_width=width,
                             bias_width_units="eV", **settings).propose(committee, seeds, prior)
    return committee, prior, plain, biased
