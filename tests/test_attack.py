from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import FD_TOL

from advsample.attack import AttackConfig, BoltzmannPrior, Candidates, attack, score
from advsample.committee import Committee
from advsample.structures import Batch


def _molecules(sizes, elements, seed=0):
    """Random multi-atom structures (3D) with two elements, labelled with random energies."""
    g = torch.Generator().manual_seed(seed)
    numbers = torch.cat([torch.tensor(elements[:n]) for n in sizes])
    n = int(sum(sizes))
    return Batch(
        positions=torch.randn(n, 3, generator=g, dtype=torch.float64),
        numbers=numbers,
        structure=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        cell=torch.zeros(len(sizes), 3, 3, dtype=torch.float64),
        pbc=torch.zeros(len(sizes), 3, dtype=torch.bool),
        energy=torch.randn(len(sizes), generator=g, dtype=torch.float64) * 2 - 10,
    )


@pytest.mark.parametrize("reduce", ["mean", "max", "sum"])
def test_objective_equals_numpy_formula(reduce):
    training = _molecules([3, 4, 2, 3, 4, 3], [7, 1, 1, 1])
    probe = _molecules([4, 2, 3], [7, 1, 1, 1], seed=5).without_labels()
    kT = 0.7
    committee = Committee.build("mlp", 4, dim=3, width=8, depth=2).eval()
    prior = BoltzmannPrior.from_training(training, kT)
    objective, var, mean_e = score(committee, probe, prior, reduce)

    # independent computation in numpy
    out = committee(probe)
    F = out.forces.detach().numpy()  # [M, N, 3]
    E = out.energy.detach().numpy()  # [M, B]
    s = probe.structure.numpy()
    per_atom = F.var(axis=0).mean(axis=1)  # population variance over members, mean over xyz
    red = {"mean": np.mean, "max": np.max, "sum": np.sum}[reduce]
    sigma2 = np.array([red(per_atom[s == b]) for b in range(probe.n_structures)])
    # least-squares element energies on training compositions
    def counts(batch):
        st, z = batch.structure.numpy(), batch.numbers.numpy()
        return np.array([[np.sum((st == b) & (z == el)) for el in (1, 7)]
                         for b in range(batch.n_structures)], float)
    A, Et = counts(training), training.energy.numpy()
    eps = np.linalg.lstsq(A, Et, rcond=None)[0]
    n_train = A.sum(1)
    e_train = (Et - A @ eps) / n_train
    Q = np.mean(np.exp(-e_train / kT))
    Ap = counts(probe)
    e_probe = (E.mean(0) - Ap @ eps) / Ap.sum(1)
    L = sigma2 * np.exp(-e_probe / kT) / Q

    np.testing.assert_allclose(var.detach().numpy(), sigma2, rtol=1e-10)
    np.testing.assert_allclose(mean_e.detach().numpy(), E.mean(0), rtol=1e-12)
    np.testing.assert_allclose(objective.detach().numpy(), np.log(L), rtol=1e-9, atol=1e-9)


def test_objective_gradient_equals_finite_differences():
    training = _molecules([3, 3, 3], [7, 1, 1])
    probe = _molecules([3, 3], [7, 1, 1], seed=3).without_labels()
    committee = Committee.build("mlp", 3, dim=3, width=8, depth=2).eval()
    prior = BoltzmannPrior.from_training(training, 0.5)
    delta = torch.zeros_like(probe.positions, requires_grad=True)

    def total(d):
        return score(committee, probe.with_positions(probe.positions + d), prior,
                     create_graph=True)[0].sum()

    (grad,) = torch.autograd.grad(total(delta), delta)
    h = 1e-6
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for a in range(grad.shape[0]):
            for j in range(3):
                d = torch.zeros_like(grad)
                d[a, j] = h
                fd[a, j] = (total(d) - total(-d)) / (2 * h)
    torch.testing.assert_close(grad, fd, atol=FD_TOL[torch.float64] * 10, rtol=1e-5)


def _toy_setup(n_seeds=50):
    from advsample.oracles.analytic import DoubleWell2D
    from advsample.train import TrainConfig, fit

    surface = DoubleWell2D()
    training = surface.uniform_points(400, -2.0, seed=0)
    committee = Committee.build("mlp", 4, dim=2, width=32, depth=2)
    fit(committee, training, TrainConfig(epochs=150, patience=1000))
    prior = BoltzmannPrior.from_training(training, 5.0)
    return surface, training, committee, prior


def test_attack_raises_objective_and_reports_best_step():
    surface, training, committee, prior = _toy_setup()
    seeds = training.without_labels()
    cfg = AttackConfig(steps=60, lr=0.02, init_scale=0.0, box=surface.box,
                       remove_translation=False)
    cands, history = attack(committee, seeds, prior, cfg, record_history=True)
    start = history[0]
    assert (cands.objective > start).all()  # every seed improved
    best, arg = history.max(dim=0)
    torch.testing.assert_close(cands.objective, best)
    assert torch.equal(cands.step, arg)
    # the returned geometry is the one of the reported step
    again, _, _ = score(committee, cands.batch, prior)
    torch.testing.assert_close(again.detach(), cands.objective, rtol=1e-9, atol=1e-9)
    lo, hi = surface.box
    assert (cands.batch.positions >= lo).all() and (cands.batch.positions <= hi).all()


def test_constraints_bound_the_displacement_and_freeze_atoms():
    training = _molecules([4] * 6, [7, 1, 1, 1])
    committee = Committee.build("mlp", 3, dim=3, width=8, depth=2).eval()
    prior = BoltzmannPrior.from_training(training, 1.0)
    seeds = training.without_labels()
    seeds.fixed = torch.zeros(seeds.positions.shape[0], dtype=torch.bool)
    seeds.fixed[0] = True
    cfg = AttackConfig(steps=40, lr=0.05, max_displacement=0.1, restarts=2)
    cands = attack(committee, seeds, prior, cfg)
    x0 = seeds.repeat(2).positions
    delta = cands.batch.positions - x0
    assert delta.norm(dim=1).max() <= 0.1 + 1e-9
    assert torch.equal(cands.batch.positions[0], x0[0])  # frozen atom of the first copy
    assert cands.parent.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert (cands.displacement <= 0.1 + 1e-9).all()


def test_net_translation_is_removed():
    training = _molecules([4] * 5, [7, 1, 1, 1])
    committee = Committee.build("mlp", 3, dim=3, width=8, depth=2).eval()
    prior = BoltzmannPrior.from_training(training, 1.0)
    cands = attack(committee, training.without_labels(), prior, AttackConfig(steps=20, lr=0.05))
    delta = (cands.batch.positions - training.positions).reshape(5, 4, 3)
    torch.testing.assert_close(delta.mean(1), torch.zeros(5, 3, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_min_distance_and_energy_ceiling_reject_steps():
    training = _molecules([3] * 4, [7, 1, 1])
    committee = Committee.build("mlp", 3, dim=3, width=8, depth=2).eval()
    prior = BoltzmannPrior.from_training(training, 1.0)
    cfg = AttackConfig(steps=10, min_distance=1e6)  # impossible: nothing feasible
    cands = attack(committee, training.without_labels(), prior, cfg)
    assert not cands.feasible.any()
    assert (cands.step == -1).all()


def test_one_call_attacks_a_thousand_seeds():
    surface, training, committee, prior = _toy_setup()
    seeds = training.without_labels().repeat(1000 // training.n_structures + 1)
    assert seeds.n_structures >= 1000
    cands = attack(committee, seeds, prior, AttackConfig(steps=5, box=surface.box,
                                                         remove_translation=False))
    assert len(cands) == seeds.n_structures and cands.feasible.all()


def test_relative_energy_ceiling_is_never_exceeded_by_a_kept_step():
    training = _molecules([4] * 8, [7, 1, 1, 1])
    committee = Committee.build("mlp", 3, dim=3, width=8, depth=2).eval()
    prior = BoltzmannPrior.from_training(training, 1.0)
    e_train = prior.per_atom_energy(training.energy, training)
    assert prior.e_max == pytest.approx(float(e_train.max()))
    seeds = training.without_labels()
    # put the training maximum at the median predicted energy of the seeds
    predicted = prior.per_atom_energy(committee(seeds, forces=False).mean_energy.detach(), seeds)
    prior = replace(prior, e_max=float(predicted.median()))
    free = attack(committee, seeds, prior, AttackConfig(steps=30, lr=0.1, restarts=2))
    above = prior.per_atom_energy(free.energy, free.batch) - prior.e_max
    assert (above > 0).any()  # unconstrained, some kept steps are above: the test can fail
    capped = attack(committee, seeds, prior, AttackConfig(steps=30, lr=0.1, restarts=2,
                                                          energy_above_initial=0.0))
    kept = capped.feasible
    assert kept.any()
    above = prior.per_atom_energy(capped.energy, capped.batch) - prior.e_max
    assert (above[kept] <= 1e-12).all()


def test_target_attack_stops_at_the_target_and_stays_there():
    surface, training, committee, prior = _toy_setup()
    n = min(60, training.n_structures)
    seeds = training.without_labels().select(torch.arange(n))
    base = dict(lr=0.02, init_scale=0.0, box=surface.box, remove_translation=False)
    free = attack(committee, seeds, prior, AttackConfig(steps=80, **base))
    start = score(committee, seeds, prior)[1].sqrt()
    target = float(torch.quantile(free.uncertainty.sqrt(), 0.5))
    aimed = attack(committee, seeds, prior, AttackConfig(steps=80, target_sigma=target, **base))
    sigma = aimed.uncertainty.sqrt()
    reached = sigma >= target
    assert reached.sum() >= 10 and (start[reached] < target).any()
    # at, not beyond: the kept step is where sigma crossed the target, far below the maximum
    assert (sigma[reached] <= 1.2 * target).all()
    assert sigma[reached].median() < free.uncertainty.sqrt()[reached].median()
    # not reached: the attack kept maximising as usual (same steps as the free attack)
    torch.testing.assert_close(aimed.objective[~reached], free.objective[~reached])
    # a seed stays where it arrived, however long the attack runs on
    longer = attack(committee, seeds, prior, AttackConfig(steps=160, target_sigma=target,
                                                          **base))
    torch.testing.assert_close(longer.batch.positions.reshape(n, -1)[reached],
                               aimed.batch.positions.reshape(n, -1)[reached])
    assert torch.equal(longer.step[reached], aimed.step[reached])


def test_energy_ceiling_is_relative_to_the_initial_data_and_does_not_ratchet():
    from advsample.loop import sample_generation
    from advsample.samplers.adversarial import AdversarialSampler
    from advsample.select import SelectConfig, training_energy
    from advsample.structures import concatenate

    initial = _molecules([4] * 8, [7, 1, 1, 1])
    committee = Committee.build("mlp", 3, dim=3, width=8, depth=2).eval()
    # a "high label" the loop added: a seed whose oracle energy lies far above the initial data
    high = _molecules([4] * 2, [7, 1, 1, 1], seed=3)
    high.energy = high.energy + 50.0
    training = concatenate([initial, high])
    sampler = AdversarialSampler(AttackConfig(steps=30, lr=0.1, restarts=2,
                                              energy_above_initial=0.0))
    select = SelectConfig(max_new=4, gate_percentile=0.0)
    prior = BoltzmannPrior.from_training(training, 1.0)
    reference = max(float(prior.per_atom_energy(initial.energy, initial).max()),
                    float(prior.per_atom_energy(training_energy(committee, initial),
                                                initial).max()))

    def kept_above(result):
        c = result.candidates
        e = prior.per_atom_energy(c.energy, c.batch) - reference
        return e[c.feasible]

    ratcheting = sample_generation(committee, training, sampler, 1.0, select)
    assert (kept_above(ratcheting) > 1e-9).any()  # the training maximum lets steps above
    fixed = sample_generation(committee, training, sampler, 1.0, select, initial=initial)
    assert fixed.candidates.feasible.any()
    assert (kept_above(fixed) <= 1e-9).all()


@pytest.mark.parametrize("n_atoms", [4, 22])
def test_auto_kT_recovers_the_temperature_of_harmonic_energies(n_atoms):
    """Potential energies of 3N - 6 harmonic modes at temperature T are Gamma(n/2, k_B T):
    auto kT must be 4 k_B T / N whatever N (the old spread rule grew with sqrt(N))."""
    from advsample.attack import AUTO_KT_MULTIPLE

    kT_true = 0.02585  # eV, 300 K
    modes = 3 * n_atoms - 6
    g = torch.Generator().manual_seed(1)
    k = 4000
    gamma = torch.distributions.Gamma(torch.tensor(modes / 2.0), torch.tensor(1.0))
    torch.manual_seed(1)
    energy = gamma.sample((k,)).to(torch.float64) * kT_true - 50.0 * n_atoms
    batch = _molecules([n_atoms] * k, [6] * n_atoms)  # one element: reference = mean
    batch.positions = torch.randn(batch.positions.shape, generator=g, dtype=torch.float64)
    batch.energy = energy
    kT = BoltzmannPrior.auto_kT(batch)
    assert kT * n_atoms == pytest.approx(AUTO_KT_MULTIPLE * kT_true, rel=0.05)


class _LadderSampler:
    """Proposes by kT: at kT0 two structures distinct from the seeds plus copies of the seeds
    (duplicates), at higher kT a displaced copy of every seed (distinct), with the objective
    growing with kT, so hotter candidates would outrank colder ones if they were compared."""

    name = "attack"

    def __init__(self, kT0):
        self.kT0 = kT0

    def propose(self, committee, seeds, prior):
        hot = prior.kT > self.kT0 * 1.5
        g = torch.Generator().manual_seed(int(prior.kT * 1000))
        batch = seeds
        if hot:
            batch = seeds.with_positions(seeds.positions
                                         + 0.3 * torch.randn(seeds.positions.shape, generator=g,
                                                             dtype=seeds.positions.dtype))
        else:
            moved = seeds.positions.clone()
            first_two = seeds.structure < 2
            moved[first_two] += 0.3 * torch.randn(moved[first_two].shape, generator=g,
                                                  dtype=moved.dtype)
            batch = seeds.with_positions(moved)
        b = batch.n_structures
        return Candidates(batch=batch, objective=torch.full((b,), prior.kT * 100),
                          uncertainty=torch.ones(b), energy=torch.zeros(b),
                          parent=torch.arange(b), step=torch.zeros(b, dtype=torch.long),
                          displacement=torch.zeros(b), feasible=torch.ones(b, dtype=torch.bool))


def test_kT_ladder_fills_a_starved_generation_with_the_coldest_distinct_picks():
    from advsample.loop import sample_generation
    from advsample.select import SelectConfig, distances_to

    training = _molecules([4] * 8, [7, 1, 1, 1])
    committee = Committee.build("mlp", 2, dim=3, width=8, depth=2).eval()
    cfg = SelectConfig(max_new=6, gate_absolute=1e-12, min_separation=0.05, metric="rmsd")
    sampler = _LadderSampler(kT0=0.01)
    starved = sample_generation(committee, training, sampler, 0.01, cfg)
    assert len(starved.chosen) == 2  # the seeds' copies are duplicates of training
    filled = sample_generation(committee, training, sampler, 0.01, cfg, kT_ladder=2)
    assert len(filled.chosen) == 6
    kT = filled.kT[filled.chosen]
    # the two cold picks are kept (first), the rest is from the first hotter rung only
    assert kT.tolist() == [0.01, 0.01, 0.02, 0.02, 0.02, 0.02]
    assert set(filled.chosen[:2].tolist()) == set(starved.chosen.tolist())
    assert len(filled.candidates) == 16 and len(filled.kT) == 16  # the third rung not run
    picked = filled.candidates.batch.select(filled.chosen)
    for k in range(6):  # distinct from one another
        others = [j for j in range(6) if j != k]
        assert distances_to(picked.select(others), picked.select([k]), "rmsd").min() > 0.05
