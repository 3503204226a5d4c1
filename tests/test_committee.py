import pytest
import torch
from helpers import FD_TOL

from advsample.committee import Committee
from advsample.structures import Batch


def _three_atom_batch(b=4):
    pos = torch.randn(b * 3, 3, dtype=torch.float64)
    return Batch(
        positions=pos,
        numbers=torch.tensor([7, 1, 1] * b),
        structure=torch.arange(b).repeat_interleave(3),
        cell=torch.zeros(b, 3, 3, dtype=torch.float64),
        pbc=torch.zeros(b, 3, dtype=torch.bool),
    )


def test_forces_equal_minus_finite_difference_gradient():
    c = Committee.build("mlp", 3, dim=3, width=16, depth=2).eval()
    batch = _three_atom_batch()
    out = c(batch)
    h = 1e-5
    fd = torch.zeros_like(out.forces)
    for a in range(batch.positions.shape[0]):
        for j in range(3):
            p = batch.positions.clone()
            p[a, j] += h
            ep = c(batch.with_positions(p), forces=False).energy
            p[a, j] -= 2 * h
            em = c(batch.with_positions(p), forces=False).energy
            fd[:, a, j] = -(ep - em)[:, batch.structure[a]] / (2 * h)
    torch.testing.assert_close(out.forces, fd, atol=FD_TOL[torch.float64], rtol=1e-5)


def test_members_differ_and_batched_equals_one_by_one():
    c = Committee.build("mlp", 4, dim=3, width=16, depth=2).eval()
    batch = _three_atom_batch()
    e = c(batch, forces=False).energy
    assert (e[0] != e[1]).all()  # distinct initialisations
    for k in range(batch.n_structures):
        ek = c(batch.select([k]), forces=False).energy[:, 0]
        torch.testing.assert_close(ek, e[:, k])


def test_save_load_round_trips_bit_exactly(tmp_path):
    c = Committee.build("mlp", 3, dim=2, width=8, depth=2).eval()
    with torch.no_grad():
        c.members[1].element_energy[0] = -3.25
    c.save(tmp_path / "c.pt")
    d = Committee.load(tmp_path / "c.pt")
    for a, b in zip(c.state_dict().values(), d.state_dict().values()):
        assert torch.equal(a, b)
    batch = Batch.from_points(torch.randn(6, 2, dtype=torch.float64))
    assert torch.equal(c(batch).forces, d(batch).forces)


def test_vectorized_mlp_committee_equals_the_member_loop():
    committee = Committee.build("mlp", 3, seed=2, dim=2, width=16, depth=2)
    with torch.no_grad():
        for k, member in enumerate(committee.members):
            member.element_energy.normal_()
            member.energy_scale.fill_(1.0 + k)
            member.input_centre.fill_(0.1 * k)
    points = Batch.from_points(torch.randn(7, 2, dtype=torch.float64))
    positions = points.positions.detach().requires_grad_(True)
    results = []
    for vectorize in (True, False):
        committee.vectorize = vectorize
        out = committee(points.with_positions(positions), create_graph=True)
        (second,) = torch.autograd.grad(out.forces.var(0).sum(), positions)
        results.append((out.energy, out.forces, second))
    assert committee.vectorize is False and Committee.build("mlp", 2, dim=2).vectorized
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_compiled_committee_equals_eager_for_nn_md():
    from ase.build import molecule

    frames = [molecule("NH3"), molecule("CH4")]
    batch = Batch.from_atoms(frames, labels=False)
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=4.0, n_rbf=8)
    committee.eval()
    eager = committee(batch)
    committee.compile = True
    compiled = committee(batch)
    torch.testing.assert_close(compiled.energy, eager.energy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.forces, eager.forces, rtol=1e-5, atol=1e-5)
    # attacks (create_graph) bypass the compiled function
    assert committee(batch, create_graph=True).forces.requires_grad
