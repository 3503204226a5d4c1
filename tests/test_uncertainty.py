"""Committee spread against an independent numpy computation."""

import numpy as np
import pytest
import torch

from advsample.uncertainty import (
    REDUCTIONS,
    atom_force_variance,
    energy_std,
    force_variance,
    reduce_atoms,
)

SIZES = [3, 1, 5, 2]  # structures of different sizes, one of a single atom
M = 4  # committee members


def _forces(seed: int = 0):
    """Random committee forces [M, N, 3] (eV/Å) and the structure index [N] of SIZES."""
    rng = np.random.default_rng(seed)
    n = sum(SIZES)
    forces = rng.normal(size=(M, n, 3)) * rng.uniform(0.1, 3.0, size=(1, n, 1))
    structure = np.repeat(np.arange(len(SIZES)), SIZES)
    return forces, structure


def _numpy_force_variance(forces: np.ndarray, structure: np.ndarray, reduce: str) -> np.ndarray:
    """σ²_F [B]: population variance over members, mean over xyz, then over each structure."""
    mean = forces.sum(axis=0) / forces.shape[0]
    per_atom = (((forces - mean) ** 2).sum(axis=0) / forces.shape[0]).mean(axis=1)  # [N]
    red = {"mean": np.mean, "max": np.max, "sum": np.sum}[reduce]
    return np.array([red(per_atom[structure == b]) for b in range(structure.max() + 1)])


def test_atom_force_variance_is_population_variance_mean_over_xyz():
    forces, _ = _forces()
    per_atom = atom_force_variance(torch.as_tensor(forces))
    expected = forces.var(axis=0, ddof=0).mean(axis=1)
    assert per_atom.shape == (sum(SIZES),)
    np.testing.assert_allclose(per_atom.numpy(), expected, rtol=1e-12)
    # not the unbiased estimator: the two differ by the factor M / (M - 1)
    assert not np.allclose(per_atom.numpy(), forces.var(axis=0, ddof=1).mean(axis=1))


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_force_variance_matches_numpy(reduce):
    forces, structure = _forces(seed=1)
    got = force_variance(torch.as_tensor(forces), torch.as_tensor(structure), len(SIZES), reduce)
    expected = _numpy_force_variance(forces, structure, reduce)
    assert got.shape == (len(SIZES),)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_reductions_differ_on_multi_atom_structures():
    forces, structure = _forces(seed=2)
    f, s = torch.as_tensor(forces), torch.as_tensor(structure)
    mean, mx, total = (force_variance(f, s, len(SIZES), r) for r in ("mean", "max", "sum"))
    sizes = torch.tensor(SIZES, dtype=f.dtype)
    torch.testing.assert_close(total, mean * sizes, rtol=1e-12, atol=0)
    assert (mx >= mean - 1e-15).all()
    multi = sizes > 1
    assert (mx[multi] > mean[multi]).all() and (total[multi] > mx[multi]).all()
    torch.testing.assert_close(mean[~multi], mx[~multi], rtol=0, atol=0)  # one atom: all equal


def test_variance_is_zero_when_members_agree_and_shift_invariant():
    forces, structure = _forces(seed=3)
    same = np.repeat(forces[:1], M, axis=0)
    s = torch.as_tensor(structure)
    zero = force_variance(torch.as_tensor(same), s, len(SIZES), "max")
    assert torch.equal(zero, torch.zeros(len(SIZES), dtype=zero.dtype))
    shifted = forces + np.array([1.0, -2.0, 0.5])  # the same offset on every member
    torch.testing.assert_close(force_variance(torch.as_tensor(shifted), s, len(SIZES)),
                               force_variance(torch.as_tensor(forces), s, len(SIZES)))


def test_reduce_atoms_keeps_empty_structures_at_zero():
    values = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
    structure = torch.tensor([0, 0, 2])
    for reduce, expected in [("mean", [2.0, 0.0, 5.0]), ("sum", [4.0, 0.0, 5.0]),
                             ("max", [3.0, 0.0, 5.0])]:
        got = reduce_atoms(values, structure, 3, reduce)
        assert got.tolist() == expected, reduce


@pytest.mark.parametrize("reduce", ["median", "Mean", "", "min"])
def test_unknown_reduction_raises(reduce):
    forces, structure = _forces()
    with pytest.raises(ValueError, match="reduce must be one of"):
        force_variance(torch.as_tensor(forces), torch.as_tensor(structure), len(SIZES), reduce)
    with pytest.raises(ValueError):
        reduce_atoms(torch.ones(3), torch.zeros(3, dtype=torch.long), 1, reduce)


def test_energy_std_matches_numpy():
    rng = np.random.default_rng(4)
    energy = rng.normal(loc=-100.0, scale=0.3, size=(M, 6))  # [M, B] eV
    got = energy_std(torch.as_tensor(energy))
    assert got.shape == (6,)
    np.testing.assert_allclose(got.numpy(), energy.std(axis=0, ddof=0), rtol=1e-12)
    assert not np.allclose(got.numpy(), energy.std(axis=0, ddof=1))
