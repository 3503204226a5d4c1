"""Shortest interatomic distances vs ASE, for molecules and periodic cells."""

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from advsample.geometry import min_interatomic_distance
from advsample.structures import Batch


def test_matches_ase_for_molecules_and_cells_in_one_batch():
    rng = np.random.default_rng(0)
    frames = [molecule("NH3"), molecule("CH4")]
    for k in range(3):
        a = bulk("Si", "diamond", a=5.43, cubic=True)
        a.rattle(0.2, seed=k)
        frames.append(a)
    chain = Atoms("H", positions=[[0, 0, 0]], cell=[0.74, 5, 5], pbc=[True, False, False])
    frames.append(chain)  # the closest neighbour is the atom's own periodic image
    for a in frames[:2]:
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    got = min_interatomic_distance(Batch.from_atoms(frames, labels=False))
    for k, a in enumerate(frames):
        expected = neighbor_list("d", a, 3.0).min()
        assert abs(float(got[k]) - expected) < 1e-9


def test_search_radius_reports_inf_when_no_pair_is_that_close():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    batch = Batch.from_atoms([si], labels=False)
    assert torch.isinf(min_interatomic_distance(batch, within=2.0)).all()  # bond is 2.35 Å
    assert abs(float(min_interatomic_distance(batch, within=2.5)[0]) - 5.43 * 3**0.5 / 4) < 1e-9
