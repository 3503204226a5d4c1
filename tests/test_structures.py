import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from advsample.structures import Batch, StructureError, concatenate


def test_atoms_round_trip_and_select():
    mols = [molecule("NH3"), molecule("H2O"), molecule("CH4")]
    for i, m in enumerate(mols):
        m.info["energy"] = float(i)
        m.arrays["forces"] = np.full((len(m), 3), float(i))
    b = Batch.from_atoms(mols)
    assert b.n_structures == 3 and b.n_atoms.tolist() == [4, 3, 5]
    sub = b.select([2, 0])
    assert sub.n_atoms.tolist() == [5, 4]
    assert sub.energy.tolist() == [2.0, 0.0]
    back = sub.to_atoms()
    assert back[0].get_chemical_formula() == "CH4"
    np.testing.assert_allclose(back[1].positions, mols[0].positions)
    again = concatenate([sub, b.select([1])])
    assert again.structure.tolist() == [0] * 5 + [1] * 4 + [2] * 3


def test_periodic_fields():
    b = Batch.from_atoms([bulk("Cu", cubic=True)], labels=False)
    assert b.pbc.all() and b.cell.shape == (1, 3, 3)


def test_points_for_toys():
    b = Batch.from_points(np.zeros((5, 2)))
    assert b.dim == 2 and b.n_atoms.tolist() == [1] * 5


def test_bad_input_is_rejected():
    m = molecule("NH3")
    m.positions[0, 0] = np.nan
    with pytest.raises(StructureError, match="NaN"):
        Batch.from_atoms([m])
    with pytest.raises(StructureError):
        Batch.from_points(torch.zeros(3))
    with pytest.raises(StructureError, match="no structures"):
        Batch.from_atoms([])
