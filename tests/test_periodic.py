"""Periodic attacks: strain gradient, wrapping, continuity across the cell boundary."""

import numpy as np
import torch
from ase.build import bulk
from helpers import FD_TOL

from advsample.attack import AttackConfig, BoltzmannPrior, attack, deformed, score, wrap_positions
from advsample.committee import Committee
from advsample.structures import Batch, concatenate


def _cells(n=2):
    frames = []
    for k in range(n):
        a = bulk("Si", "diamond", a=5.43, cubic=True)
        a.rattle(0.05, seed=k)
        frames.append(a)
    batch = Batch.from_atoms(frames, labels=False)
    batch.energy = torch.tensor([-40.0 - 0.1 * k for k in range(n)], dtype=torch.float64)
    return batch


def _committee():
    return Committee.build("painn", 3, features=8, interactions=1, cutoff=3.0, n_rbf=6,
                           dtype="float64").eval()


def test_strain_gradient_equals_finite_differences():
    cells, committee = _cells(), _committee()
    prior = BoltzmannPrior.from_training(cells, 0.1)
    delta = torch.zeros_like(cells.positions)
    strain = torch.zeros(2, 3, 3, dtype=torch.float64, requires_grad=True)

    def total(e):
        return score(committee, deformed(cells, delta, e), prior, create_graph=True)[0].sum()

    (grad,) = torch.autograd.grad(total(strain), strain)
    h = 1e-6
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for idx in np.ndindex(2, 3, 3):
            e = torch.zeros(2, 3, 3, dtype=torch.float64)
            e[idx] = h
            fd[idx] = (total(e) - total(-e)) / (2 * h)
    torch.testing.assert_close(grad, fd, atol=FD_TOL[torch.float64] * 10, rtol=1e-5)


def test_strain_keeps_scaled_coordinates():
    cells = _cells(1)
    e = torch.tensor([[[0.02, 0.01, 0.0], [0.0, -0.01, 0.0], [0.0, 0.0, 0.03]]],
                     dtype=torch.float64)
    strained = deformed(cells, torch.zeros_like(cells.positions), e)
    s0 = torch.linalg.solve(cells.cell[0].T, cells.positions.T).T
    s1 = torch.linalg.solve(strained.cell[0].T, strained.positions.T).T
    torch.testing.assert_close(s0, s1)


def test_pure_strain_attack_raises_objective_and_moves_only_the_cell():
    cells, committee = _cells(), _committee()
    prior = BoltzmannPrior.from_training(cells, 0.1)
    cfg = AttackConfig(steps=15, lr=0.005, strain=True, displacements=False, max_strain=0.04)
    cands, history = attack(committee, cells.without_labels(), prior, cfg, record_history=True)
    assert (cands.objective > history[0]).all()
    assert not torch.allclose(cands.batch.cell, cells.cell)
    rel = torch.linalg.solve(cells.cell[0], cands.batch.cell[0]) - torch.eye(3, dtype=torch.float64)
    assert rel.abs().max() <= 0.04 + 1e-12
    # scaled coordinates are those of the seed (up to wrapping)
    s0 = torch.linalg.solve(cells.cell[0].T, cells.positions[:8].T).T
    s1 = torch.linalg.solve(cands.batch.cell[0].T, cands.batch.positions[:8].T).T
    diff = (s1 - s0) - torch.round(s1 - s0)
    assert diff.abs().max() < 1e-10


def test_attack_output_is_wrapped_into_the_cell():
    cells, committee = _cells(), _committee()
    cells.positions[0] += torch.tensor([5.42, 0.0, 0.0], dtype=torch.float64)  # near the edge
    prior = BoltzmannPrior.from_training(cells, 0.1)
    cands = attack(committee, cells.without_labels(), prior,
                   AttackConfig(steps=10, lr=0.02, strain=True))
    s = torch.linalg.solve(cands.batch.cell[0].T, cands.batch.positions[:8].T).T
    assert (s >= 0).all() and (s < 1).all()


def test_crossing_the_cell_boundary_changes_nothing_discontinuously():
    cell = _cells(1)
    committee = _committee()
    prior = BoltzmannPrior.from_training(cell, 0.1)
    a = cell.cell[0, 0, 0]
    frames = []
    for x in torch.linspace(-0.02, 0.02, 9, dtype=torch.float64):
        pos = cell.positions.clone()
        pos[0, 0] = a + x  # atom 0 moves across the x = a face
        frames.append(cell.with_positions(pos))
    batch = concatenate(frames)
    obj, var, energy = score(committee, batch, prior)
    obj_w, _, energy_w = score(committee, wrap_positions(batch), prior)
    torch.testing.assert_close(obj, obj_w)
    torch.testing.assert_close(energy, energy_w)
    steps = energy.diff().abs()
    assert steps.max() < 5 * steps.median() + 1e-9  # smooth: no jump at the face
