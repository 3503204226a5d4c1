"""Torsion (dihedral) attack variables: bond detection, rigid rotations, gradients, attacks."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT

from advsample.attack import AttackConfig, BoltzmannPrior, attack, score
from advsample.committee import Committee
from advsample.structures import Batch
from advsample.torsions import (
    TorsionSet,
    apply_torsions,
    bond_graph,
    moving_side,
    rotatable_bonds,
)

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "alanine_dipeptide.extxyz"

# Ace-Ala-Nme (C7eq), CC(=O)N[C@@H](C)C(=O)NC with hydrogens last (Å)
ALANINE_SYMBOLS = "CCONCCCONC" + "H" * 12
ALANINE_POSITIONS = [
    [2.4616, 1.6725, 0.6213], [1.5636, 0.7416, -0.1601], [1.3861, 0.8304, -1.3627],
    [0.9703, -0.2105, 0.5864], [0.1018, -1.2315, 0.0221], [0.0853, -2.4568, 0.9206],
    [-1.3228, -0.6578, -0.1573], [-2.2520, -0.9669, 0.5594], [-1.4006, 0.2103, -1.1783],
    [-2.6161, 0.9135, -1.5068], [3.2007, 1.1048, 1.1814], [1.8670, 2.2589, 1.3188],
    [2.9664, 2.3439, -0.0666], [1.0615, -0.1966, 1.5899], [0.5013, -1.4766, -0.9692],
    [-0.4015, -2.2158, 1.8629], [1.0974, -2.8083, 1.1076], [-0.4835, -3.2504, 0.4451],
    [-0.5466, 0.4734, -1.6596], [-2.8579, 0.7736, -2.5611], [-3.4154, 0.5023, -0.8921],
    [-2.5180, 1.9819, -1.3029],
]
PHI, PSI = (1, 3, 4, 6), (3, 4, 6, 8)  # C-N-Cα-C and N-Cα-C-N of the atoms above


def alanine_dipeptide() -> Atoms:
    """The hard-coded alanine dipeptide (22 atoms)."""
    return Atoms(ALANINE_SYMBOLS, positions=ALANINE_POSITIONS)


def alkane(n: int) -> Atoms:
    """All-trans zigzag CnH(2n+2) with tetrahedral hydrogens (C-C 1.54 Å, C-H 1.09 Å)."""
    carbons = np.array([[1.27 * i, 0.44 * (i % 2), 0.0] for i in range(n)])
    hydrogens = []
    z = np.array([0.0, 0.0, 1.0])
    for i, c in enumerate(carbons):
        neighbours = [carbons[m] for m in (i - 1, i + 1) if 0 <= m < n]
        if len(neighbours) == 1:  # terminal: three H at 109.5° from the C-C bond
            b = (c - neighbours[0]) / np.linalg.norm(c - neighbours[0])
            p1 = np.cross(b, z) / np.linalg.norm(np.cross(b, z))
            p2 = np.cross(b, p1)
            a = np.radians(70.53)
            for phi in np.radians([90.0, 210.0, 330.0]):
                d = np.cos(a) * b + np.sin(a) * (np.cos(phi) * p1 + np.sin(phi) * p2)
                hydrogens.append(c + 1.09 * d)
        else:  # internal: two H in the plane through the bisector and z
            u = sum((c - m) / np.linalg.norm(c - m) for m in neighbours)
            u /= np.linalg.norm(u)
            a = np.radians(54.74)
            hydrogens += [c + 1.09 * (np.cos(a) * u + s * np.sin(a) * z) for s in (1, -1)]
    return Atoms(f"C{n}H{len(hydrogens)}", positions=np.vstack([carbons, hydrogens]))


def cyclohexane() -> Atoms:
    """Chair cyclohexane C6H12: ring C-C 1.53 Å, axial and equatorial C-H 1.09 Å."""
    ring = [np.array([1.45 * np.cos(t), 1.45 * np.sin(t), 0.25 * (-1) ** i])
            for i, t in enumerate(np.radians(np.arange(0, 360, 60)))]
    hydrogens = []
    for c in ring:
        radial = np.array([c[0], c[1], 0.0]) / 1.45
        hydrogens.append(c + 1.09 * np.array([0.0, 0.0, np.sign(c[2])]))  # axial
        hydrogens.append(c + 1.09 * (0.94 * radial - 0.34 * np.array([0, 0, np.sign(c[2])])))
    return Atoms("C6H12", positions=np.vstack([ring, hydrogens]))


def _bonds(atoms):
    """Sorted bond list (i < j) of an ase.Atoms from bond_graph."""
    graph = bond_graph(atoms.numbers, atoms.positions)
    return sorted((i, j) for i, n in enumerate(graph) for j in n if i < j)


def _distances(x):
    """All pair distances [n, n] of positions [n, 3] (numpy or torch)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return torch.cdist(x, x)


# ------------------------------------------------------------------ connectivity
def test_test_molecules_have_the_expected_connectivity():
    for atoms, n_bonds in ((alanine_dipeptide(), 21), (alkane(6), 19), (cyclohexane(), 18),
                           (molecule("trans-butane"), 13)):
        graph = bond_graph(atoms.numbers, atoms.positions)
        assert len(_bonds(atoms)) == n_bonds  # a tree has n - 1 bonds, a ring one more
        degree = {1: (1,), 6: (3, 4), 7: (3,), 8: (1,)}  # sp2 C in the amide groups
        for i, z in enumerate(atoms.numbers):
            assert len(graph[i]) in degree[int(z)]


def test_rotatable_bonds_of_alanine_dipeptide_are_phi_and_psi():
    atoms = alanine_dipeptide()
    assert rotatable_bonds(atoms.numbers, atoms.positions) == [(3, 4), (4, 6)]


@pytest.mark.skipif(not DATA.exists(), reason="examples/data/alanine_dipeptide.extxyz missing")
def test_rotatable_bonds_of_the_example_alanine_file():
    import ase.io

    atoms = ase.io.read(DATA)
    def quad(key, default):
        """Atom indices of a dihedral stored in the frame's info (string or array)."""
        value = atoms.info.get(key, default)
        return [int(i) for i in (value.split() if isinstance(value, str) else np.ravel(value))]

    phi, psi = quad("phi_atoms", PHI), quad("psi_atoms", PSI)
    want = sorted(tuple(sorted(q[1:3])) for q in (phi, psi))
    assert rotatable_bonds(atoms.numbers, atoms.positions) == want


def test_rotatable_bonds_of_butane_hexane_and_cyclohexane():
    butane = molecule("trans-butane")
    assert list(butane.symbols[:4]) == ["C"] * 4
    assert rotatable_bonds(butane.numbers, butane.positions) == [(1, 2)]
    hexane = alkane(6)
    assert rotatable_bonds(hexane.numbers, hexane.positions) == [(1, 2), (2, 3), (3, 4)]
    ring = cyclohexane()
    assert rotatable_bonds(ring.numbers, ring.positions) == []
    for name in ("CH3CH2OH", "H2O2", "C6H6"):  # only H rotors, no rotor, aromatic ring
        m = molecule(name)
        assert rotatable_bonds(m.numbers, m.positions) == []


def test_moving_side_is_the_smaller_side_and_rings_are_refused():
    atoms = alanine_dipeptide()
    graph = bond_graph(atoms.numbers, atoms.positions)
    # phi: the acetyl group (C, C, O, N, 3 methyl H, N-H) is smaller than the rest
    assert moving_side((3, 4), graph).tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    assert moving_side((4, 3), graph).tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    # psi: the N-methylamide group
    assert moving_side((4, 6), graph).tolist() == [6, 7, 8, 9, 18, 19, 20, 21]
    ring = cyclohexane()
    with pytest.raises(ValueError, match="ring"):
        moving_side((0, 1), bond_graph(ring.numbers, ring.positions))


# ------------------------------------------------------------------ rotations
def _batch(*molecules):
    """Unlabelled float64 batch of ase molecules."""
    return Batch.from_atoms(list(molecules), labels=False)


def test_torsion_changes_the_dihedral_by_theta_and_keeps_the_rigid_sides():
    atoms = alanine_dipeptide()
    batch = _batch(atoms)
    torsions = TorsionSet.from_batch(batch, "rotatable")
    assert torsions.local_bonds() == [[(4, 3), (4, 6)]]  # phi turns the acetyl side
    theta = torch.tensor([[0.7, -1.1]], dtype=torch.float64)
    x = apply_torsions(batch.positions, torsions, theta)
    turned = atoms.copy()
    turned.positions = x.numpy()

    for quad, angle in ((PHI, 0.7), (PSI, -1.1)):
        change = turned.get_dihedral(*quad) - atoms.get_dihedral(*quad)
        change = (change + 180.0) % 360.0 - 180.0
        assert change == pytest.approx(np.degrees(angle), abs=1e-7)
    # every bond length is kept, and every distance within each of the three rigid pieces
    bonds = np.array(_bonds(atoms))
    d0, d1 = _distances(atoms.positions), _distances(x)
    torch.testing.assert_close(d1[bonds[:, 0], bonds[:, 1]], d0[bonds[:, 0], bonds[:, 1]],
                               atol=1e-8, rtol=0)
    graph = bond_graph(atoms.numbers, atoms.positions)
    acetyl = moving_side((3, 4), graph).tolist()
    amide = moving_side((4, 6), graph).tolist()
    middle = sorted(set(range(22)) - set(acetyl) - set(amide)) + [3, 6]
    for piece in (acetyl, amide, middle):
        idx = torch.tensor(piece)
        torch.testing.assert_close(d1[idx][:, idx], d0[idx][:, idx], atol=1e-8, rtol=0)
    # the distances across the bond did change, and atoms outside the moving sides did not
    assert (d1 - d0).abs().max() > 0.5
    middle_only = torch.tensor(sorted(set(range(22)) - set(acetyl) - set(amide)))
    assert torch.equal(x[middle_only], batch.positions[middle_only])


def test_successive_torsions_turn_about_the_bonds_as_earlier_slots_left_them():
    hexane = alkane(6)
    batch = _batch(hexane)
    torsions = TorsionSet.from_batch(batch, "rotatable")  # bonds 1-2, 2-3, 3-4 of the chain
    theta = torch.tensor([[0.4, -2.0, 1.3]], dtype=torch.float64)
    turned = hexane.copy()
    turned.positions = apply_torsions(batch.positions, torsions, theta).numpy()
    for i, angle in enumerate(theta[0].tolist()):
        change = turned.get_dihedral(i, i + 1, i + 2, i + 3) - hexane.get_dihedral(
            i, i + 1, i + 2, i + 3)
        assert (change + 180.0) % 360.0 - 180.0 == pytest.approx(np.degrees(angle), abs=1e-7)
    bonds = np.array(_bonds(hexane))
    d0, d1 = _distances(hexane.positions), _distances(turned.positions)
    torch.testing.assert_close(d1[bonds[:, 0], bonds[:, 1]], d0[bonds[:, 0], bonds[:, 1]],
                               atol=1e-8, rtol=0)


def test_the_order_of_a_bond_and_the_side_moved_do_not_change_the_molecule():
    atoms = alanine_dipeptide()
    batch = _batch(atoms)
    theta = torch.tensor([[0.9]], dtype=torch.float64)
    forward = apply_torsions(batch.positions, TorsionSet.from_batch(batch, [[(3, 4)]]), theta)
    backward = apply_torsions(batch.positions, TorsionSet.from_batch(batch, [[(4, 3)]]), theta)
    torch.testing.assert_close(forward, backward, atol=1e-12, rtol=0)
    # ase turns the other (larger) side: the same molecule up to a rigid rotation
    other = atoms.copy()
    graph = bond_graph(atoms.numbers, atoms.positions)
    big = sorted(set(range(22)) - set(moving_side((3, 4), graph).tolist()))
    other.set_dihedral(*PHI, atoms.get_dihedral(*PHI) + np.degrees(0.9), indices=big)
    torch.testing.assert_close(_distances(forward), _distances(other.positions), atol=1e-8,
                               rtol=0)
    # fixed atoms on the smaller side: the larger side turns instead, same molecule
    fixed = _batch(atoms)
    fixed.fixed = torch.zeros(22, dtype=torch.bool)
    fixed.fixed[0] = True
    torsions = TorsionSet.from_batch(fixed, [[(3, 4)]])
    assert torsions.local_bonds() == [[(3, 4)]] and not torsions.moving[0, 0]
    moved = apply_torsions(fixed.positions, torsions, theta)
    assert torch.equal(moved[0], fixed.positions[0])
    torch.testing.assert_close(_distances(moved), _distances(forward), atol=1e-8, rtol=0)


def test_explicit_bonds_that_cannot_turn_are_refused():
    ring = _batch(cyclohexane())
    with pytest.raises(ValueError, match="ring"):
        TorsionSet.from_batch(ring, [[(0, 1)]])
    with pytest.raises(ValueError, match="not a bond"):
        TorsionSet.from_batch(_batch(alkane(4)), [[(0, 3)]])
    with pytest.raises(ValueError, match="one list of bonds per structure"):
        TorsionSet.from_batch(_batch(alkane(4), alkane(4)), [[(1, 2)]])


def test_gradient_with_respect_to_theta_equals_finite_differences():
    # hexane's three slots turn about bonds that earlier slots have moved; alanine has two
    # slots, so its third is a dummy
    batch = _batch(alkane(6), alanine_dipeptide())
    torsions = TorsionSet.from_batch(batch, "rotatable")
    assert torsions.valid.tolist() == [[True, True, True], [True, True, False]]
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(batch.positions.shape, generator=g, dtype=torch.float64)
    pairs = torch.tensor(list(itertools.combinations(range(20), 2)))

    def f(theta, positions=batch.positions):
        """A nonlinear scalar of the turned positions."""
        x = apply_torsions(positions, torsions, theta)
        d = (x[pairs[:, 0]] - x[pairs[:, 1]]).norm(dim=1)
        return (weights * x).sum() + torch.exp(-d).sum()

    theta = (torch.rand(2, 3, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_(True)
    (grad,) = torch.autograd.grad(f(theta), theta)
    h = 1e-6
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for b, s in itertools.product(range(2), range(3)):
            step = torch.zeros_like(theta)
            step[b, s] = h
            fd[b, s] = (f(theta + step) - f(theta - step)) / (2 * h)
    torch.testing.assert_close(grad, fd, atol=1e-7, rtol=1e-6)
    assert grad[1, 2] == 0 and grad[0].abs().min() > 1e-3
    # and with respect to the positions (the axes move with the atoms)
    small = _batch(alkane(4))
    torsions = TorsionSet.from_batch(small, "rotatable")
    assert torch.autograd.gradcheck(
        lambda x, t: apply_torsions(x, torsions, t),
        (small.positions.clone().requires_grad_(True),
         torch.tensor([[0.8]], dtype=torch.float64, requires_grad=True)))


def test_torsion_set_repeat_and_select_match_the_batch():
    batch = _batch(alanine_dipeptide(), alkane(6), molecule("trans-butane"), cyclohexane())
    torsions = TorsionSet.from_batch(batch, "rotatable")
    assert torsions.valid.sum(1).tolist() == [2, 3, 1, 0]
    repeated = torsions.repeat(3)
    direct = TorsionSet.from_batch(batch.repeat(3), "rotatable")
    for name in ("j", "k", "moving", "valid", "structure"):
        assert torch.equal(getattr(repeated, name), getattr(direct, name)), name
    assert torch.equal(repeated.structure, batch.repeat(3).structure)
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(4, 3, generator=g, dtype=torch.float64)
    once = apply_torsions(batch.positions, torsions, theta)
    thrice = apply_torsions(batch.repeat(3).positions, repeated, theta.repeat_interleave(3, 0))
    torch.testing.assert_close(thrice, batch.with_positions(once).repeat(3).positions,
                               atol=1e-12, rtol=0)
    index = [3, 1, 1, 0]
    picked = torsions.select(index)
    again = TorsionSet.from_batch(batch.select(index), "rotatable")
    assert picked.local_bonds() == again.local_bonds()
    for name in ("j", "k", "moving", "valid"):
        assert torch.equal(getattr(picked, name), getattr(again, name)), name


# ------------------------------------------------------------------ attacks
def _labelled_alanine(n: int, seed: int = 0) -> list[Atoms]:
    """n rattled alanine dipeptides (0.03 Å) labelled by EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = alanine_dipeptide()
        a.positions += rng.normal(0, 0.03, a.positions.shape)
        a.calc = EMT()
        a.get_forces()
        frames.append(a)
    return frames


@pytest.fixture(scope="module")
def alanine_setup():
    """A random 2-member PaiNN committee and the Boltzmann prior of EMT-labelled alanine."""
    training = Batch.from_atoms(_labelled_alanine(4))
    committee = Committee.build("painn", 2, features=8, interactions=1)
    return committee, BoltzmannPrior.from_training(training, 0.5)


def test_pure_torsion_attack_raises_the_objective_and_keeps_the_molecules_rigid(alanine_setup):
    committee, prior = alanine_setup
    seeds = _batch(alanine_dipeptide(), alkane(6))
    cfg = AttackConfig(steps=12, torsions="rotatable", displacements=False, torsion_lr=0.1,
                       restarts=2)
    cands, history = attack(committee, seeds, prior, cfg, record_history=True)
    assert cands.parent.tolist() == [0, 0, 1, 1]
    assert torch.equal(cands.batch.numbers, seeds.repeat(2).numbers)
    assert torch.equal(cands.batch.structure, seeds.repeat(2).structure)
    assert (cands.objective > history[0]).all() and (cands.step > 0).all()
    # the returned geometry is the one of the reported step (log σ²_F of a 2-member committee
    # cancels digits: evaluating with or without create_graph differs by ~1e-8 relative)
    again, _, _ = score(committee, cands.batch, prior)
    torch.testing.assert_close(again.detach(), cands.objective, rtol=1e-6, atol=1e-9)
    # restarts start from different θ and end at different geometries
    x = cands.batch.positions
    n_ala = 22
    assert not torch.allclose(x[:n_ala], x[n_ala:2 * n_ala])
    # only torsions moved the atoms: bonds and the rigid pieces are intact
    x0 = seeds.repeat(2).positions
    for c, atoms in enumerate([alanine_dipeptide()] * 2 + [alkane(6)] * 2):
        sl = cands.batch.structure == c
        bonds = np.array(_bonds(atoms))
        d0, d1 = _distances(x0[sl]), _distances(x[sl])
        torch.testing.assert_close(d1[bonds[:, 0], bonds[:, 1]], d0[bonds[:, 0], bonds[:, 1]],
                                   atol=1e-8, rtol=0)
        moved = (x[sl] - x0[sl]).norm(dim=1).max()
        assert float(cands.displacement[c]) == pytest.approx(float(moved), abs=1e-12)
        assert moved > 1e-3
    d0, d1 = _distances(x0[:n_ala]), _distances(x[:n_ala])
    graph = bond_graph(*(lambda a: (a.numbers, a.positions))(alanine_dipeptide()))
    for piece in (moving_side((3, 4), graph), moving_side((4, 6), graph)):
        idx = torch.as_tensor(piece)
        torch.testing.assert_close(d1[idx][:, idx], d0[idx][:, idx], atol=1e-8, rtol=0)


def test_torsion_bound_and_combined_displacements(alanine_setup):
    committee, prior = alanine_setup
    atoms = alanine_dipeptide()
    seeds = _batch(atoms)
    cfg = AttackConfig(steps=6, torsions=[[3, 4]], displacements=False, torsion_lr=1.0,
                       max_torsion=0.05)
    cands = attack(committee, seeds, prior, cfg)
    turned = atoms.copy()
    turned.positions = cands.batch.positions.numpy()
    change = (turned.get_dihedral(*PHI) - atoms.get_dihedral(*PHI) + 180.0) % 360.0 - 180.0
    assert abs(change) <= np.degrees(0.05) + 1e-6
    assert turned.get_dihedral(*PSI) == pytest.approx(atoms.get_dihedral(*PSI), abs=1e-7)
    # torsions and Cartesian displacements together: the bound on δ holds on top of θ
    cfg = AttackConfig(steps=6, torsions="rotatable", max_displacement=0.02, max_torsion=0.3)
    cands = attack(committee, seeds, prior, cfg)
    assert cands.feasible.all() and len(cands) == 1
    with pytest.raises(ValueError, match="box"):
        attack(committee, seeds, prior, AttackConfig(steps=1, torsions="rotatable",
                                                     box=(-10.0, 10.0)))
    with pytest.raises(ValueError, match="nothing to optimise"):
        attack(committee, _batch(cyclohexane()), prior,
               AttackConfig(steps=1, torsions="rotatable", displacements=False))


def test_random_torsion_starts_turn_later_restarts_anywhere(alanine_setup):
    committee, prior = alanine_setup
    atoms = alanine_dipeptide()
    seeds = _batch(atoms)
    common = dict(steps=1, lr=1e-9, torsion_lr=1e-9, torsions="rotatable",
                  displacements=False, restarts=6, seed=4)
    near = attack(committee, seeds, prior, AttackConfig(**common))
    anywhere = attack(committee, seeds, prior, AttackConfig(torsion_start="random", **common))

    def turned(cands, k):
        """(Δφ, Δψ) of restart k from the seed (degrees, wrapped to [-180, 180))."""
        a = atoms.copy()
        a.positions = cands.batch.positions[k * 22:(k + 1) * 22].numpy()
        return np.array([(a.get_dihedral(*q) - atoms.get_dihedral(*q) + 180.0) % 360.0 - 180.0
                         for q in (PHI, PSI)])

    # the first restart starts at the seed in both modes, the same draw: the same geometry
    torch.testing.assert_close(anywhere.batch.positions[:22], near.batch.positions[:22],
                               atol=1e-12, rtol=0)
    assert np.abs(turned(near, 0)).max() < 20.0
    assert max(np.abs(turned(near, k)).max() for k in range(6)) < 30.0  # N(0, 0.05²) rad
    later = np.array([turned(anywhere, k) for k in range(1, 6)])
    assert np.abs(later).max() > 90.0  # uniform in [-180, 180): some start far away
    # still only torsions: every bond length is the seed's
    bonds = np.array(_bonds(atoms))
    d0 = _distances(seeds.positions)
    for k in range(6):
        d = _distances(anywhere.batch.positions[k * 22:(k + 1) * 22])
        torch.testing.assert_close(d[bonds[:, 0], bonds[:, 1]], d0[bonds[:, 0], bonds[:, 1]],
                                   atol=1e-8, rtol=0)
    bounded = attack(committee, seeds, prior,
                     AttackConfig(torsion_start="random", max_torsion=0.2, **common))
    assert max(np.abs(turned(bounded, k)).max() for k in range(6)) <= np.degrees(0.2) + 1e-6
    with pytest.raises(ValueError, match="torsion_start"):
        attack(committee, seeds, prior, AttackConfig(torsion_start="far", **common))
