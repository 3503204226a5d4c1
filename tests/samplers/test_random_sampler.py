"""Random baselines: Gaussian/uniform displacements of seeds, and uniform points in a box.

Checked: the displacements have the requested distribution (std, zero mean per structure
with translation removal, ±scale bound for the uniform variant); they obey the projection
of attacks (box, max_displacement, frozen atoms); restarts, parents and scores follow the
sampler interface (scores equal ``attack.score`` of the displaced structures); seeded runs
reproduce. The uniform box sampler fills the box, ignores the seeds and needs a box.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.constraints import FixAtoms
from scipy import stats

from advsample.attack import AttackConfig, BoltzmannPrior, score
from advsample.committee import Committee
from advsample.samplers import SAMPLERS
from advsample.samplers.random import GaussianDisplacementSampler, UniformBoxSampler
from advsample.structures import Batch

# ------------------------------------------------------------------ systems


def big_structures(sizes=(1500, 1200, 900, 1000), seed=0):
    """Large multi-atom 3D structures (one element) for statistics; tiny MLP committee.

    MLPEnergy sums a per-atom MLP of the coordinates, so scoring thousands of atoms is cheap.
    """
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    batch = Batch(
        positions=torch.rand(n, 3, generator=g, dtype=torch.float64) * 10.0,
        numbers=torch.ones(n, dtype=torch.long),
        structure=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        cell=torch.zeros(len(sizes), 3, 3, dtype=torch.float64),
        pbc=torch.zeros(len(sizes), 3, dtype=torch.bool),
        energy=-torch.tensor(sizes, dtype=torch.float64) * 0.5,
    )
    committee = Committee.build("mlp", 2, dim=3, width=8, depth=1).eval()
    prior = BoltzmannPrior.from_training(batch, kT=0.1)
    return committee, prior, batch.without_labels()


def molecules(fixed: list[int] | None = None):
    """NH3, H2O and CH4 (made-up energies, eV), a 2-member PaiNN committee and its prior.

    ``fixed``: atoms of every molecule frozen with ase's FixAtoms.
    """
    atoms = [molecule(name) for name in ("NH3", "H2O", "CH4")]
    if fixed is not None:
        for a in atoms:
            a.set_constraint(FixAtoms(indices=fixed))
    energy = torch.tensor([-80.0, -75.0, -40.0], dtype=torch.float64)
    training = Batch.from_atoms(atoms, labels=False).with_labels(energy, None)
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=4.0,
                                n_rbf=8).eval()
    prior = BoltzmannPrior.from_training(training, kT=0.5)
    return committee, prior, training.without_labels()


def toy(n_seeds=6, seed=0):
    """A 2-member MLP committee on 2D points, its prior and ``n_seeds`` seeds near the edge
    of the box (-1.2, 1.2)."""
    rng = np.random.default_rng(seed)
    training = Batch.from_points(rng.uniform(-1, 1, (10, 2)), energy=rng.normal(0, 0.5, 10))
    committee = Committee.build("mlp", 2, dim=2, width=8, depth=1).eval()
    prior = BoltzmannPrior.from_training(training, kT=1.0)
    seeds = Batch.from_points(rng.uniform(0.9, 1.1, (n_seeds, 2)) * rng.choice([-1, 1],
                                                                              (n_seeds, 2)))
    return committee, prior, seeds


def delta_of(candidates, seeds: Batch, restarts: int) -> torch.Tensor:
    """Displacements [N·restarts, d] of the candidates from their seeds."""
    return candidates.batch.positions - seeds.repeat(restarts).positions


# ------------------------------------------------------------------ distributions


def test_gaussian_std_and_zero_mean_per_structure_with_translation_removal():
    committee, prior, seeds = big_structures()
    scale = 0.2
    cfg = AttackConfig(restarts=2, seed=3, remove_translation=True)
    cands = GaussianDisplacementSampler(scale=scale, config=cfg).propose(committee, seeds, prior)
    delta = delta_of(cands, seeds, 2)
    structure = cands.batch.structure
    # zero net translation of every structure, each coordinate
    sums = torch.zeros(cands.batch.n_structures, 3, dtype=delta.dtype).index_add(0, structure,
                                                                                delta)
    mean = sums / cands.batch.n_atoms.unsqueeze(1).to(delta.dtype)
    assert mean.abs().max() < 1e-12
    # std of every coordinate ≈ scale (removing the mean of n atoms scales it by sqrt(1 − 1/n))
    sample = delta.flatten().numpy()  # 27,600 values
    assert sample.std() == pytest.approx(scale, rel=0.03)
    for k in range(3):
        assert delta[:, k].std().item() == pytest.approx(scale, rel=0.05)
    assert stats.kstest(sample / scale, "norm").pvalue > 1e-3


def test_gaussian_without_translation_removal_keeps_the_net_shift():
    committee, prior, seeds = big_structures(sizes=(20, 30, 25))
    scale = 0.2
    cfg = AttackConfig(restarts=4, seed=1, remove_translation=False)
    cands = GaussianDisplacementSampler(scale=scale, config=cfg).propose(committee, seeds, prior)
    delta = delta_of(cands, seeds, 4)
    sums = torch.zeros(cands.batch.n_structures, 3, dtype=delta.dtype)
    mean = sums.index_add(0, cands.batch.structure, delta) / cands.batch.n_atoms[:, None]
    assert (mean.abs() > 1e-6).all()  # the raw draw, nothing subtracted
    # the net shift of n atoms has std scale / sqrt(n): its size checks the draw is unprojected
    n = cands.batch.n_atoms[:, None].to(delta.dtype)
    z = (mean * n.sqrt() / scale).flatten().numpy()
    assert 0.6 < z.std() < 1.4


def test_uniform_draw_is_bounded_by_scale_before_projection():
    committee, prior, seeds = big_structures()
    scale = 0.3
    cfg = AttackConfig(restarts=1, seed=5, remove_translation=False)
    sampler = GaussianDisplacementSampler(scale=scale, distribution="uniform", config=cfg)
    delta = delta_of(sampler.propose(committee, seeds, prior), seeds, 1).flatten().numpy()
    assert np.abs(delta).max() <= scale + 1e-12
    assert np.abs(delta).max() > 0.999 * scale  # the bound is reached, not a smaller one
    assert delta.mean() == pytest.approx(0.0, abs=0.01)
    assert delta.std() == pytest.approx(scale / np.sqrt(3), rel=0.03)
    assert stats.kstest(delta, "uniform", args=(-scale, 2 * scale)).pvalue > 1e-3
    # with translation removal the uniform draw is shifted per structure, zero net move
    cfg_t = AttackConfig(restarts=1, seed=5, remove_translation=True)
    cands = GaussianDisplacementSampler(scale=scale, distribution="uniform",
                                        config=cfg_t).propose(committee, seeds, prior)
    d_t = delta_of(cands, seeds, 1)
    mean = torch.zeros(seeds.n_structures, 3, dtype=d_t.dtype).index_add(
        0, seeds.structure, d_t) / seeds.n_atoms[:, None]
    assert mean.abs().max() < 1e-12


def test_unknown_distribution_raises():
    committee, prior, seeds = toy()
    with pytest.raises(ValueError, match="distribution"):
        GaussianDisplacementSampler(distribution="cauchy").propose(committee, seeds, prior)


def test_single_point_structures_are_displaced_despite_translation_removal():
    committee, prior, seeds = toy()
    cfg = AttackConfig(restarts=3, remove_translation=True)
    cands = GaussianDisplacementSampler(scale=0.05, config=cfg).propose(committee, seeds, prior)
    delta = delta_of(cands, seeds, 3)
    assert (delta.norm(dim=1) > 0).all()


# ------------------------------------------------------------------ projection


def test_box_keeps_every_toy_point_inside():
    committee, prior, seeds = toy(n_seeds=20)
    lo, hi = -1.2, 1.2
    cfg = AttackConfig(restarts=5, box=(lo, hi), remove_translation=False, seed=2)
    cands = GaussianDisplacementSampler(scale=0.5, config=cfg).propose(committee, seeds, prior)
    x = cands.batch.positions
    ulp = 1e-12  # X0 + ((X0 + δ).clamp(lo, hi) − X0) can round past the edge: see below
    assert x.min() >= lo - ulp and x.max() <= hi + ulp
    # the projection was needed: the raw draw leaves the box, and those points sit on its edge
    gen = torch.Generator().manual_seed(2)
    raw = seeds.repeat(5).positions + torch.randn(x.shape, generator=gen,
                                                  dtype=x.dtype) * 0.5
    outside = (raw < lo) | (raw > hi)
    assert outside.any()
    edge = torch.where(raw < lo, torch.full_like(x, lo), torch.full_like(x, hi))
    torch.testing.assert_close(x[outside], edge[outside], rtol=0, atol=ulp)
    torch.testing.assert_close(x[~outside], raw[~outside], rtol=0, atol=1e-14)


def test_box_bound_holds_exactly():
    """X0 + δ never lands even one rounding step outside the box, for random draws and
    attacks pushed against the walls."""
    from advsample.attack import attack

    committee, prior, _ = toy()
    seeds = Batch.from_points(np.random.default_rng(0).uniform(-1.2, 1.2, (200, 2)))
    lo, hi = -1.2, 1.2
    cfg = AttackConfig(restarts=1, box=(lo, hi), remove_translation=False, seed=0)
    x = GaussianDisplacementSampler(scale=3.0, config=cfg).propose(committee, seeds,
                                                                   prior).batch.positions
    assert x.min() >= lo and x.max() <= hi
    attacked = attack(committee, seeds, prior, AttackConfig(steps=30, lr=0.2, box=(lo, hi),
                                                            remove_translation=False))
    y = attacked.batch.positions
    assert y.min() >= lo and y.max() <= hi and (y.abs() == hi).any()  # some reached a wall


def test_max_displacement_bounds_every_atom():
    committee, prior, seeds = molecules()
    bound = 0.1
    cfg = AttackConfig(restarts=4, max_displacement=bound, seed=4)
    cands = GaussianDisplacementSampler(scale=0.3, config=cfg).propose(committee, seeds, prior)
    norms = delta_of(cands, seeds, 4).norm(dim=1)
    assert norms.max() <= bound * (1 + 1e-12)
    assert (norms > bound * (1 - 1e-9)).sum() > norms.numel() // 2  # most were cut back
    largest = torch.zeros(cands.batch.n_structures, dtype=norms.dtype).scatter_reduce(
        0, cands.batch.structure, norms, reduce="amax", include_self=False)
    torch.testing.assert_close(cands.displacement, largest)
    assert (cands.displacement <= bound * (1 + 1e-12)).all()


def test_frozen_atoms_never_move():
    committee, prior, seeds = molecules(fixed=[0, 1])
    assert seeds.fixed is not None and int(seeds.fixed.sum()) == 6
    for distribution in ("gaussian", "uniform"):
        cfg = AttackConfig(restarts=3, seed=6, max_displacement=0.2)
        sampler = GaussianDisplacementSampler(scale=0.1, distribution=distribution, config=cfg)
        cands = sampler.propose(committee, seeds, prior)
        delta = delta_of(cands, seeds, 3)
        fixed = seeds.repeat(3).fixed
        assert torch.equal(cands.batch.fixed, fixed)
        assert (delta[fixed] == 0).all()
        assert (delta[~fixed].norm(dim=1) > 0).all()


# ------------------------------------------------------------------ sampler interface


def test_restarts_give_one_candidate_per_seed_and_restart_with_its_parent():
    committee, prior, seeds = molecules()
    restarts = 3
    cfg = AttackConfig(restarts=restarts, seed=8)
    cands = GaussianDisplacementSampler(scale=0.05, config=cfg).propose(committee, seeds, prior)
    assert len(cands) == seeds.n_structures * restarts
    assert cands.parent.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (cands.step == -1).all()
    for k, p in enumerate(cands.parent.tolist()):
        cand, seed = cands.batch.select([k]), seeds.select([p])
        assert torch.equal(cand.numbers, seed.numbers)
        assert (cand.positions - seed.positions).norm(dim=1).max() < 0.5
    # restarts of the same seed are different draws
    x = cands.batch.positions
    first, second = cands.batch.select([0]).positions, cands.batch.select([1]).positions
    assert not torch.allclose(first, second)
    assert x.shape == seeds.repeat(restarts).positions.shape
    assert cands.batch.energy is None and cands.batch.forces is None


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_scores_equal_attack_score_of_the_displaced_structures(reduce):
    committee, prior, seeds = molecules()
    min_distance = 0.9
    cfg = AttackConfig(restarts=4, reduce=reduce, min_distance=min_distance, seed=9)
    cands = GaussianDisplacementSampler(scale=0.25, config=cfg).propose(committee, seeds, prior)
    objective, var, energy = score(committee, cands.batch, prior, reduce)
    torch.testing.assert_close(cands.objective, objective.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cands.uncertainty, var.detach(), rtol=1e-12, atol=1e-30)
    torch.testing.assert_close(cands.energy, energy.detach(), rtol=1e-12, atol=1e-12)
    # feasible = min-distance filter, computed independently
    closest = []
    for k in range(len(cands)):
        p = cands.batch.select([k]).positions.numpy()
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        closest.append(d[np.triu_indices(len(p), 1)].min())
    expected = torch.tensor(closest) >= min_distance
    assert torch.equal(cands.feasible, expected)
    assert expected.any() and (~expected).any()  # both cases occur at this scale


def test_seeded_proposals_reproduce():
    committee, prior, seeds = molecules()

    def run(seed, distribution="gaussian"):
        cfg = AttackConfig(restarts=2, seed=seed)
        sampler = GaussianDisplacementSampler(scale=0.1, distribution=distribution, config=cfg)
        return sampler.propose(committee, seeds, prior)

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a.batch.positions, b.batch.positions)
    assert torch.equal(a.objective, b.objective)
    assert not torch.allclose(a.batch.positions, c.batch.positions)
    u1, u2 = run(11, "uniform"), run(11, "uniform")
    assert torch.equal(u1.batch.positions, u2.batch.positions)
    assert not torch.allclose(u1.batch.positions, a.batch.positions)


def test_registered_as_random_and_uniform():
    assert SAMPLERS["random"] is GaussianDisplacementSampler
    assert SAMPLERS["uniform"] is UniformBoxSampler


# ------------------------------------------------------------------ uniform box sampler


def test_uniform_box_points_fill_the_box_and_ignore_the_seeds():
    committee, prior, seeds = toy(n_seeds=50)
    lo, hi = -1.5, 0.5
    cfg = AttackConfig(restarts=4, box=(lo, hi), seed=3)
    cands = UniformBoxSampler(config=cfg).propose(committee, seeds, prior)
    x = cands.batch.positions
    assert len(cands) == seeds.n_structures * 4 == x.shape[0]
    assert x.shape[1] == seeds.dim
    assert x.min() >= lo and x.max() <= hi
    assert (cands.parent == -1).all() and (cands.step == -1).all()
    for k in range(seeds.dim):
        assert stats.kstest(x[:, k].numpy(), "uniform", args=(lo, hi - lo)).pvalue > 1e-3
    objective, var, energy = score(committee, cands.batch, prior)
    torch.testing.assert_close(cands.objective, objective.detach())
    torch.testing.assert_close(cands.uncertainty, var.detach())
    torch.testing.assert_close(cands.energy, energy.detach())
    # other seed positions, same count: same points; another seed: other points
    moved = seeds.with_positions(seeds.positions + 0.3)
    again = UniformBoxSampler(config=cfg).propose(committee, moved, prior)
    assert torch.equal(again.batch.positions, x)
    other = UniformBoxSampler(config=AttackConfig(restarts=4, box=(lo, hi), seed=4))
    assert not torch.allclose(other.propose(committee, seeds, prior).batch.positions, x)


def test_uniform_box_count_follows_seeds_and_restarts():
    committee, prior, seeds = toy(n_seeds=3)
    for restarts in (1, 2, 5):
        cfg = AttackConfig(restarts=restarts, box=(-1.0, 1.0))
        cands = UniformBoxSampler(config=cfg).propose(committee, seeds, prior)
        assert len(cands) == 3 * restarts
        assert cands.parent.tolist() == [-1] * (3 * restarts)


def test_uniform_box_needs_a_box():
    committee, prior, seeds = toy()
    with pytest.raises(ValueError, match="box"):
        UniformBoxSampler(config=AttackConfig(box=None)).propose(committee, seeds, prior)
