"""MD stability test: sane potentials survive, broken ones fail for the right reason.

Members are small analytic energy models of NH3 so the physics of each case is known: an
elastic network (springs on every pair at its start length) holds the molecule together; a
flat potential exerts no force, so thermal motion carries the atoms apart until a bond
breaks; a potential undefined beyond a radius produces NaN; an overlapping start fails
before the first step.
"""

from __future__ import annotations

import json
import math

import torch
from ase.build import molecule
from torch import nn

from advsample.committee import Committee
from advsample.stability import REASONS, stability_test, starting_bonds
from advsample.structures import Batch

NH3 = molecule("NH3")


class ElasticNetwork(nn.Module):
    """E = ½ k Σ_{i<j} (d_ij − d⁰_ij)² for structures that are all NH3 (k in eV/Å²)."""

    def __init__(self, k: float):
        super().__init__()
        self.k = k
        self.register_buffer("d0", torch.cdist(*[torch.as_tensor(NH3.positions)] * 2))

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.positions.view(-1, 4, 3)
        stretch = torch.triu(torch.cdist(x, x) - self.d0, diagonal=1)
        return 0.5 * self.k * stretch.pow(2).sum((1, 2))


class Flat(nn.Module):
    """E = 0 everywhere: no forces at all."""

    def forward(self, batch: Batch) -> torch.Tensor:
        return batch.positions.new_zeros(batch.n_structures).index_add(
            0, batch.structure, 0.0 * batch.positions.sum(1)
        )


class Undefined(nn.Module):
    """E = Σ_i √(1.3 Å² − |x_i − centroid|²) · 1e-3 eV/Å: NaN once an atom leaves 1.14 Å."""

    def forward(self, batch: Batch) -> torch.Tensor:
        x = batch.positions.view(-1, 4, 3)
        r2 = (x - x.mean(1, keepdim=True)).pow(2).sum(2)
        return 1e-3 * (1.3 - r2).sqrt().sum(1)


def starts(*atoms_list) -> Batch:
    return Batch.from_atoms(atoms_list or [NH3], labels=False)


def test_starting_bonds_of_ammonia_are_the_three_nh_bonds():
    bonds = starting_bonds(starts(NH3, NH3))
    pairs = sorted(zip(bonds.i.tolist(), bonds.j.tolist()))
    assert pairs == [(0, 1), (0, 2), (0, 3), (4, 5), (4, 6), (4, 7)]
    torch.testing.assert_close(bonds.length, torch.full((6,), 1.017, dtype=torch.float64),
                               atol=2e-3, rtol=0)


def test_periodic_bonds_cross_the_cell_boundary():
    boxed = NH3.copy()
    boxed.cell = [6.0, 6.0, 6.0]
    boxed.pbc = True
    boxed.positions += [0.1, 3.0, 3.0]  # the hydrogens with x < 0 wrap to the far side
    boxed.wrap()
    batch = starts(boxed)
    bonds = starting_bonds(batch)
    assert len(bonds.i) == 6  # three N–H bonds, listed in both directions
    assert (bonds.shift.abs().sum(1) > 0).any()
    torch.testing.assert_close(bonds.lengths(batch.positions), bonds.length)
    torch.testing.assert_close(bonds.length, torch.full((6,), 1.017, dtype=torch.float64),
                               atol=2e-3, rtol=0)


def test_sane_committee_keeps_every_run():
    committee = Committee([ElasticNetwork(10.0), ElasticNetwork(12.0)])
    result = stability_test(committee, starts(), temperature_K=600.0, steps=300,
                            runs_per_start=16, progress=False)
    assert result.fraction_stable == 1.0
    assert result.reason == ["ok"] * 16
    assert all(math.isnan(t) for t in result.time_to_failure_fs)


def test_flat_committee_lets_bonds_break():
    result = stability_test(Committee([Flat(), Flat()]), starts(), temperature_K=1000.0,
                            steps=400, runs_per_start=8, floor=0.3, progress=False)
    assert result.fraction_stable == 0.0
    assert set(result.reason) == {"bond broken"}
    assert (result.time_to_failure_fs > 0).all() and (result.time_to_failure_fs <= 200).all()


def test_overlapping_start_fails_at_step_zero_and_alone():
    crushed = NH3.copy()
    crushed.positions[1] = crushed.positions[0] + [0.2, 0.0, 0.0]
    committee = Committee([ElasticNetwork(10.0), ElasticNetwork(12.0)])
    result = stability_test(committee, starts(NH3, crushed), temperature_K=300.0, steps=100,
                            runs_per_start=3, progress=False)
    assert result.start.tolist() == [0, 0, 0, 1, 1, 1]
    assert result.reason == ["ok"] * 3 + ["close contact"] * 3
    assert result.time_to_failure_fs[3:].tolist() == [0.0] * 3
    assert result.fraction_stable == 0.5
    summary = json.loads(json.dumps(result.as_dict()))
    assert summary["counts"] == {"ok": 3, "non-finite energy": 0, "close contact": 3,
                                 "bond broken": 0}
    assert summary["time_to_failure_fs"][:3] == [None] * 3


def test_undefined_energy_is_reported_as_non_finite():
    result = stability_test(Committee([Undefined(), Undefined()]), starts(),
                            temperature_K=1500.0, steps=400, runs_per_start=4, floor=0.1,
                            bond_ceiling=10.0, progress=False)
    assert set(result.reason) == {"non-finite energy"}
    assert (result.time_to_failure_fs > 0).all()
    assert set(REASONS) == {"ok", "non-finite energy", "close contact", "bond broken"}


def test_same_seed_same_outcome():
    def run(seed):
        return stability_test(Committee([Flat(), Flat()]), starts(), temperature_K=1000.0,
                              steps=400, runs_per_start=4, floor=0.3, seed=seed,
                              progress=False).time_to_failure_fs.tolist()

    assert run(0) == run(0)
    assert run(0) != run(1)
