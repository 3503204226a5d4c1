"""Steric clashes (advsample.contacts): which pairs are checked, and the judge on real cases.

Checked on GFN2-xTB alanine dipeptide: every relaxed structure of the shipped φ/ψ scan (all
within reach of 300 K or at most a few tenths of an eV higher) keeps its contacts at 1.5x
the covalent radii; the C7eq structure turned rigidly to φ = ψ = 0 (the carbonyl O into the
amide H) does not; 1-2 and 1-3 pairs are never checked (NH3 has none left, ethane keeps its 9
H···H pairs across the C-C bond); periodic cells are skipped; an attack with min_contact
keeps no clashing step.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from test_torsions import PHI, PSI, _batch, alanine_dipeptide, alanine_setup  # noqa: F401

from advsample.attack import AttackConfig, attack
from advsample.contacts import ContactSet
from advsample.evaluators.conformers import load_grid
from advsample.structures import Batch
from advsample.torsions import TorsionSet, apply_torsions

GRID = Path(__file__).resolve().parents[1] / "examples" / "data" / "alanine_phi_psi_grid.extxyz"


def test_only_pairs_beyond_1_3_are_checked():
    nh3 = ContactSet.from_batch(_batch(molecule("NH3")), 1.5)
    assert len(nh3.i) == 0 and nh3.hold(_batch(molecule("NH3")).positions).all()
    ethane = molecule("C2H6")
    contacts = ContactSet.from_batch(_batch(ethane), 1.5)
    h = set(np.flatnonzero(ethane.numbers == 1).tolist())
    left = {i for i in h if ethane.get_distance(i, 0) < ethane.get_distance(i, 1)}
    pairs = {tuple(sorted(p)) for p in zip(contacts.i.tolist(), contacts.j.tolist())}
    assert pairs == {tuple(sorted((a, b))) for a in left for b in h - left}  # 3 x 3 H···H
    torch.testing.assert_close(contacts.minimum, torch.full((9,), 1.5 * 2 * 0.31,
                                                            dtype=contacts.minimum.dtype))
    # two molecules in one batch: pairs stay within their structure, indices are global
    both = ContactSet.from_batch(_batch(molecule("NH3"), ethane), 1.5)
    assert len(both.i) == 9 and (both.i >= 4).all() and (both.structure == 1).all()
    assert ContactSet.from_batch(Batch.from_atoms([bulk("Si", cubic=True)], labels=False),
                                 1.5).i.numel() == 0  # periodic: skipped
    with pytest.raises(ValueError, match="positive"):
        ContactSet.from_batch(_batch(ethane), 0.0)


def test_scan_conformers_hold_and_a_rigid_turn_into_a_clash_does_not():
    if not GRID.exists():
        pytest.skip("alanine dipeptide data not built (benchmarks/alanine_reference.py)")
    grid = load_grid(GRID)
    batch = Batch.from_atoms(grid, labels=False)
    energy = np.array([a.get_potential_energy() for a in grid])
    low = energy - energy.min() <= 0.4
    held = ContactSet.from_batch(batch, 1.5).hold(batch.positions).numpy()
    assert held[low].all()  # every conformer within 0.4 eV of C7eq
    c7eq = next(a for a in grid if (a.info["phi"], a.info["psi"]) == (-80.0, 80.0))
    seed = Batch.from_atoms([c7eq], labels=False)
    torsions = TorsionSet.from_batch(seed, [[(3, 4), (4, 6)]])
    turn = torch.tensor([[np.radians(0.0 - c7eq.get_dihedral(*PHI) + 360.0),
                          np.radians(0.0 - c7eq.get_dihedral(*PSI))]], dtype=torch.float64)
    turned = apply_torsions(seed.positions.double(), torsions, turn)
    check = Atoms(c7eq.numbers, turned.numpy())
    assert abs(((check.get_dihedral(*PHI) + 180) % 360) - 180) < 1e-6
    contacts = ContactSet.from_batch(seed, 1.5)
    assert not contacts.hold(turned.to(seed.positions.dtype)).item()
    assert contacts.hold(seed.positions).item()


def test_attack_with_min_contact_keeps_no_clash(alanine_setup):  # noqa: F811
    committee, prior = alanine_setup
    seeds = _batch(alanine_dipeptide())
    cfg = AttackConfig(steps=20, torsions="rotatable", displacements=False, torsion_lr=0.3,
                       restarts=8, torsion_start="random", min_contact=1.5, seed=1)
    cands = attack(committee, seeds, prior, cfg)
    contacts = ContactSet.from_batch(seeds.repeat(8), 1.5)
    kept = contacts.hold(cands.batch.positions)
    assert kept[cands.feasible].all()
    assert cands.feasible.any()
