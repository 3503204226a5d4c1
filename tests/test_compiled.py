"""The compiled committee (advsample.compiled) equals the eager autograd path: the attack
objective's gradient with respect to displacements and strain, and training gradients with
respect to every member's weights. Each model type compiles once per process (about half a
minute for these small models), so the MLP cases run with the slow tests."""

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from helpers import labelled_nh3

from advsample.attack import AttackConfig, BoltzmannPrior, attack, deformed, score, score_backward
from advsample.committee import Committee
from advsample.structures import Batch
from advsample.train import TrainConfig, _step_backward


def _labelled(frames) -> Batch:
    """``frames`` labelled by EMT."""
    for a in frames:
        a.calc = EMT()
        a.get_forces()
    return Batch.from_atoms(frames)


def _molecules_and_crystal() -> Batch:
    """Two rattled molecules and a rattled periodic Cu cell (pairs through the cell)."""
    rng = np.random.default_rng(1)
    frames = [molecule("NH3"), molecule("CH4"), bulk("Cu", "fcc", a=3.6, cubic=True)]
    for a in frames:
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    return _labelled(frames)


def _painn(size: int = 3) -> Committee:
    """A small PaiNN committee (cutoff 3 Å: Cu pairs cross the periodic cell)."""
    return Committee.build("painn", size, seed=3, features=8, interactions=2, cutoff=3.0,
                           n_rbf=6)


def _attack_gradients(committee: Committee, data: Batch, prior: BoltzmannPrior):
    """(objective, ∂Σ log L/∂δ, ∂Σ log L/∂ε) at a random displacement and strain."""
    seeds = data.without_labels()
    delta = (0.05 * torch.randn(seeds.positions.shape, generator=torch.Generator()
                                .manual_seed(0), dtype=seeds.dtype)).requires_grad_(True)
    strain = torch.full((seeds.n_structures, 3, 3), 0.01, dtype=seeds.dtype,
                        requires_grad=True)
    batch = deformed(seeds, delta, strain)
    objective, _, _ = score_backward(committee, batch, prior)
    return objective, delta.grad, strain.grad


def _check_attack_gradient(committee: Committee, data: Batch):
    for m in committee.members:
        m.fit_statistics(data)
    committee.eval()
    prior = BoltzmannPrior.from_training(data, 0.1)
    eager = _attack_gradients(committee, data, prior)
    committee.compile = True
    compiled = _attack_gradients(committee, data, prior)
    for a, b in zip(eager, compiled, strict=True):
        assert torch.isfinite(a).all() and a.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=2e-4, atol=1e-6 * float(a.abs().max()))


def test_compiled_attack_gradient_equals_eager_painn():
    _check_attack_gradient(_painn(), _molecules_and_crystal())


def _check_training_gradients(committee: Committee, data: Batch, pairs_needed: bool):
    for m in committee.members:
        m.fit_statistics(data)
    twin = copy.deepcopy(committee)
    twin.compile = True
    committee.train()
    twin.train()
    active = [0, 2]  # a subset, as when member 1 has stopped early
    batches = [data.select([0, 1]), data.select([2, 0])]
    first = committee.members[0]
    pairs = None
    if pairs_needed:
        pairs = [first.pairs(b, cached=False) for b in batches]
    cfg = TrainConfig(energy_weight=1.0, forces_weight=10.0)
    eager = _step_backward(committee, active, batches, pairs, cfg)
    compiled = _step_backward(twin, active, batches, pairs, cfg)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-8)
    for m, (a, b) in enumerate(zip(committee.members, twin.members, strict=True)):
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            if m not in active:
                assert p.grad is None and q.grad is None
                continue
            assert p.grad is not None, name
            scale = float(p.grad.abs().max()) + 1e-12
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=2e-5 * scale)


def test_compiled_training_gradients_equal_eager_painn():
    ch4 = molecule("CH4")
    ch4.calc = EMT()
    ch4.get_forces()
    data = Batch.from_atoms(labelled_nh3(2) + [ch4])
    _check_training_gradients(_painn(), data, pairs_needed=True)


def test_compiled_attack_matches_eager_attack():
    """Whole attacks, eager and compiled, end on the same candidates (few steps)."""
    data = Batch.from_atoms(labelled_nh3(4))
    committee = _painn(2)
    for m in committee.members:
        m.fit_statistics(data)
    committee.eval()
    prior = BoltzmannPrior.from_training(data, 0.05)
    cfg = AttackConfig(steps=5, lr=0.01, seed=2)
    eager = attack(committee, data.without_labels(), prior, cfg)
    committee.compile = True
    compiled = attack(committee, data.without_labels(), prior, cfg)
    torch.testing.assert_close(compiled.objective, eager.objective, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled.batch.positions, eager.batch.positions, rtol=0,
                               atol=1e-4)
    assert torch.equal(compiled.step, eager.step)
    # the compiled objective is the eager one at the same geometry
    objective, _, _ = score(committee, compiled.batch, prior)
    torch.testing.assert_close(objective, compiled.objective, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compiled_paths_equal_eager_mlp():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(6, 2)))
    energy = (x ** 2).sum(1)
    data = Batch.from_points(x, energy=energy, forces=-2 * x)
    committee = Committee.build("mlp", 3, seed=0, dim=2, width=16, depth=2)
    _check_training_gradients(committee, data, pairs_needed=False)
    committee = Committee.build("mlp", 3, seed=0, dim=2, width=16, depth=2)
    for m in committee.members:
        m.fit_statistics(data)
    committee.eval()
    prior = BoltzmannPrior.from_training(data, 0.5)
    seeds = data.without_labels()
    eager = attack(committee, seeds, prior, AttackConfig(steps=4, lr=0.05))
    committee.compile = True
    compiled = attack(committee, seeds, prior, AttackConfig(steps=4, lr=0.05))
    torch.testing.assert_close(compiled.batch.positions, eager.batch.positions, rtol=0,
                               atol=1e-8)
