"""The MD sampler: frames of NN-MD trajectories as candidates, cut at the trust bound.

Checked: candidates carry the sampler interface (scores equal attack.score of the frame,
parent, step, displacement from the seed) and pass the same selection; with a trust bound
on σ²_F each trajectory yields exactly the frames the unbounded run recorded before its
first frame above the bound, and a bound relative to the seeds' mean σ²_F gives the run of
the absolute bound it stands for; the sanity filters stop trajectories the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from advsample.attack import AttackConfig, BoltzmannPrior, score
from advsample.committee import Committee
from advsample.geometry import min_interatomic_distance
from advsample.samplers.md import MDSampler
from advsample.select import SelectConfig, select
from advsample.structures import Batch


def toy_setup():
    """A 3-member MLP committee on 2D points, its Boltzmann prior and 6 seeds."""
    committee = Committee.build("mlp", 3, dim=2, width=16, depth=2)
    rng = np.random.default_rng(0)
    training = Batch.from_points(rng.uniform(-1, 1, (20, 2)), energy=rng.normal(0, 0.1, 20))
    prior = BoltzmannPrior.from_training(training, kT=0.1)
    seeds = Batch.from_points(rng.uniform(-0.5, 0.5, (6, 2)))
    return committee, prior, seeds, training


def sampler(max_uncertainty=None, **config) -> MDSampler:
    return MDSampler(temperature_K=2000.0, steps=200, dt_fs=1.0, friction_per_fs=0.02,
                     interval=10, max_uncertainty=max_uncertainty,
                     config=AttackConfig(seed=7, **config))


def test_candidates_follow_the_sampler_interface():
    committee, prior, seeds, training = toy_setup()
    out = sampler(restarts=2).propose(committee, seeds, prior)
    assert len(out) == 6 * 2 * 20  # no bound, no filter hit: every frame of every run
    assert sorted(set(out.step.tolist())) == list(range(10, 201, 10))
    assert torch.bincount(out.parent).tolist() == [40] * 6
    assert out.feasible.all()
    objective, variance, energy = score(committee, out.batch, prior)
    torch.testing.assert_close(out.objective, objective.detach())
    torch.testing.assert_close(out.uncertainty, variance.detach())
    torch.testing.assert_close(out.energy, energy.detach())
    moved = (out.batch.positions - seeds.positions[out.parent]).norm(dim=1)
    torch.testing.assert_close(out.displacement, moved)
    assert moved.max() > 0.1  # the dynamics goes somewhere
    chosen = select(out, training, threshold=float(out.uncertainty.median()),
                    cfg=SelectConfig(max_new=5, gate_percentile=None))
    assert 0 < len(chosen) <= 5


def test_trajectories_stop_before_the_trust_bound():
    committee, prior, seeds, _ = toy_setup()
    free = sampler().propose(committee, seeds, prior)
    bound = float(free.uncertainty.quantile(0.6))
    bounded = sampler(max_uncertainty=bound).propose(committee, seeds, prior)
    assert (bounded.uncertainty <= bound).all()
    assert 0 < len(bounded) < len(free)
    for run in range(seeds.n_structures):
        mine = free.parent == run
        steps, variance = free.step[mine], free.uncertainty[mine]
        crossed = steps[variance > bound]
        first = int(crossed.min()) if len(crossed) else steps.max() + 1
        expected = free.batch.positions[mine][steps < first]
        got = bounded.batch.positions[bounded.parent == run]
        assert bounded.step[bounded.parent == run].tolist() == steps[steps < first].tolist()
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_trust_bound_relative_to_the_seeds_is_that_absolute_bound():
    committee, prior, seeds, _ = toy_setup()
    seed_variance = score(committee, seeds, prior)[1].detach()
    relative = MDSampler(temperature_K=2000.0, steps=200, dt_fs=1.0, friction_per_fs=0.02,
                         interval=10, max_uncertainty=3.0, max_uncertainty_units="seeds",
                         config=AttackConfig(seed=7))
    bound = relative.trust_bound(committee, seeds, prior)
    assert bound == pytest.approx(3.0 * float(seed_variance.mean()), rel=1e-12)
    got = relative.propose(committee, seeds, prior)
    expected = sampler(max_uncertainty=bound).propose(committee, seeds, prior)
    assert 0 < len(got) < len(sampler().propose(committee, seeds, prior))
    torch.testing.assert_close(got.batch.positions, expected.batch.positions, rtol=0, atol=0)
    with pytest.raises(ValueError, match="max_uncertainty_units"):
        MDSampler(max_uncertainty=1.0, max_uncertainty_units="eV").trust_bound(
            committee, seeds, prior)


def test_relative_trust_bound_has_a_floor():
    committee, prior, seeds, _ = toy_setup()
    relative = 3.0 * float(score(committee, seeds, prior)[1].detach().mean())

    def bound(floor, units="seeds"):
        return MDSampler(max_uncertainty=3.0, max_uncertainty_units=units,
                         min_uncertainty_bound=floor).trust_bound(committee, seeds, prior)

    assert bound(0.0) == pytest.approx(relative, rel=1e-12)
    assert bound(0.5 * relative) == pytest.approx(relative, rel=1e-12)  # above: unchanged
    assert bound(2.0 * relative) == 2.0 * relative  # a committee too sure of its seeds
    assert bound(2.0 * relative, "absolute") == 3.0  # an absolute bound is taken as given


def test_sanity_filters_stop_trajectories():
    # Hot NH3 on a random PaiNN committee: N–H bonds (1.02 Å) soon vibrate below 0.95 Å.
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                                dtype="float64")
    training = Batch.from_atoms([molecule("NH3")] * 2, labels=False)
    training.energy = torch.tensor([0.0, 0.1], dtype=torch.float64)
    prior = BoltzmannPrior.from_training(training, kT=0.1)
    seeds = Batch.from_atoms([molecule("NH3")], labels=False)
    md = MDSampler(temperature_K=1500.0, steps=100, dt_fs=0.5, interval=5,
                   config=AttackConfig(restarts=8, min_distance=0.95, seed=1))
    out = md.propose(committee, seeds, prior)
    assert (min_interatomic_distance(out.batch) >= 0.95).all()
    assert (out.parent == 0).all()
    assert len(out) < 8 * 20  # some trajectories were stopped
    assert out.batch.positions.shape == (4 * len(out), 3)
