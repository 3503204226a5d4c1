"""MD stability test: sane potentials survive, broken ones fail for the right reason.

Members are small analytic energy models of NH3 so the physics of each case is known: an
elastic network (springs on every pair at its start length) holds the molecule together; a
flat potential exerts no force, so thermal motion carries the atoms apart until a bond
breaks; a potential undefined beyond a radius produces NaN; an overlapping start fails
before the first step.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.build import molecule
from helpers import ElasticNetwork
from torch import nn

from advsample.committee import Committee
from advsample.stability import REASONS, judge_frames, stability_test, starting_bonds
from advsample.structures import Batch

NH3 = molecule("NH3")


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


def test_a_broken_run_names_the_stretched_bond_and_keeps_its_geometry():
    result = stability_test(Committee([Flat(), Flat()]), starts(), temperature_K=1000.0,
                            steps=400, runs_per_start=4, floor=0.3, progress=False)
    assert result.culprit == ["N-H"] * 4  # NH3's only bonds
    assert result.failures_by_culprit == {"bond broken N-H": 4}
    assert len(result.failed_frames) == 4
    for run, frame in enumerate(result.failed_frames):
        assert frame.info["run"] == run and frame.info["reason"] == "bond broken"
        assert frame.info["time_fs"] == result.time_to_failure_fs[run]
        i, j = frame.info["pair"]
        assert {frame.numbers[i], frame.numbers[j]} == {7, 1}
        # the named bond is the one stretched past the ceiling, and the most stretched one
        stretch = [frame.get_distance(0, h) / NH3.get_distance(0, h) for h in (1, 2, 3)]
        assert frame.get_distance(i, j) / NH3.get_distance(i, j) == max(stretch) > 1.5


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
    assert result.fraction_stable_per_start == [1.0, 0.0]
    summary = json.loads(json.dumps(result.as_dict()))
    assert summary["counts"] == {"ok": 3, "non-finite energy": 0, "close contact": 3,
                                 "bond broken": 0}
    assert summary["time_to_failure_fs"][:3] == [None] * 3
    assert result.culprit == [""] * 3 + ["N-H"] * 3  # the crushed pair is atoms 0 and 1
    assert [f.info["pair"] for f in result.failed_frames] == [[0, 1]] * 3
    assert summary["failures_by_culprit"] == {"close contact N-H": 3}


def test_undefined_energy_is_reported_as_non_finite():
    result = stability_test(Committee([Undefined(), Undefined()]), starts(),
                            temperature_K=1500.0, steps=400, runs_per_start=4, floor=0.1,
                            bond_ceiling=10.0, progress=False)
    assert set(result.reason) == {"non-finite energy"}
    assert (result.time_to_failure_fs > 0).all()
    assert result.culprit == [""] * 4 and result.failures_by_culprit == {"non-finite energy": 4}
    assert set(REASONS) == {"ok", "non-finite energy", "close contact", "bond broken"}


def test_same_seed_same_outcome():
    def run(seed):
        return stability_test(Committee([Flat(), Flat()]), starts(), temperature_K=1000.0,
                              steps=400, runs_per_start=4, floor=0.3, seed=seed,
                              progress=False).time_to_failure_fs.tolist()

    assert run(0) == run(0)
    assert run(0) != run(1)


# ------------------------------------------------------------------ the judge on real data
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _pairs(bonds) -> set:
    return {tuple(sorted(p)) for p in zip(bonds.i.tolist(), bonds.j.tolist(), strict=True)}


def test_every_n_h_bond_of_the_paper_ammonia_frames_is_found():
    frames = ase.io.read(SHARED / "ammonia_paper.extxyz", ":")
    energy = np.array([a.get_potential_energy() for a in frames])  # eV above the lowest
    near = [a for a, e in zip(frames, energy, strict=True) if e < 0.5]  # 1000 K and below
    for subset, tolerance in ((near, 1.2), (frames, 1.35)):
        batch = Batch.from_atoms(subset, labels=False)
        nh = {(4 * k, 4 * k + h) for k in range(len(subset)) for h in (1, 2, 3)}
        assert _pairs(starting_bonds(batch, tolerance)) == nh  # every N-H, and no H-H
    assert len(near) > 100
    # the plain sum of covalent radii (tolerance 1) misses most of them (2 of 3)
    batch = Batch.from_atoms(frames, labels=False)
    assert len(_pairs(starting_bonds(batch, tolerance=1.0))) < len(frames) * 3 / 2


def _complexes(n: int) -> list:
    entries = json.loads((SHARED / "zeolites_host_guest.json").read_text())
    small = [e for e in entries if e["cif"].count("\n") < 120][:n]
    return [ase.io.read(io.StringIO(e["cif"]), format="cif") for e in small]


def test_every_guest_bond_and_framework_si_o_bond_of_zeolite_complexes_is_found():
    from ase.neighborlist import neighbor_list

    complexes = _complexes(8)
    for atoms in complexes:
        batch = Batch.from_atoms([atoms], labels=False)
        found = _pairs(starting_bonds(batch))
        i, j, d = neighbor_list("ijd", atoms, 2.2)
        symbols = atoms.get_chemical_symbols()
        for a in range(len(atoms)):  # each H: the bond to its nearest neighbour
            if symbols[a] == "H":
                near = j[i == a][np.argmin(d[i == a])]
                assert tuple(sorted((a, int(near)))) in found, (symbols[near], "H")
            if symbols[a] == "Si":  # each Si: its four oxygens
                oxygens = np.argsort(np.where(i == a, d, np.inf))[:4]
                assert {symbols[j[k]] for k in oxygens} == {"O"}
                for k in oxygens:
                    assert tuple(sorted((a, int(j[k])))) in found


def test_judge_fails_a_pulled_hydrogen_and_passes_thermal_frames():
    frames = ase.io.read(SHARED / "ammonia_paper.extxyz", ":")
    energies = np.array([a.get_potential_energy() for a in frames])
    start = frames[int(np.argmin(energies))]
    starts = Batch.from_atoms([start] * 3, labels=False)
    pulled = start.copy()
    bond = pulled.positions[1] - pulled.positions[0]
    pulled.positions[1] = pulled.positions[0] + 1.7 * bond  # N-H 1.03 -> 1.75 Å
    thermal = [a for a, e in zip(frames, energies, strict=True) if 0.02 < e < 0.05][0]
    both = Batch.from_atoms([pulled, thermal, start], labels=False)
    assert judge_frames(starts, both) == ["bond broken", "ok", "ok"]


def test_stability_evaluator_writes_the_failed_geometries_and_the_report_lists_them(tmp_path):
    from advsample.evaluators import StabilityEvaluator
    from advsample.loop import EvaluationContext
    from advsample.report import _failure_lines

    gen_dir = tmp_path / "generations" / "gen_002"
    training = starts()
    context = EvaluationContext(2, Committee([Flat(), Flat()]), training, np.zeros(1, int),
                                torch.device("cpu"), None, gen_dir)
    evaluator = StabilityEvaluator(starts=[NH3], name="hot", temperature_K=1000.0, runs=3,
                                   steps=400, floor=0.3)
    metrics = json.loads(json.dumps(evaluator.evaluate(context)))
    assert metrics["fraction_stable"] == 0.0
    assert metrics["failures_by_culprit"] == {"bond broken N-H": 3}
    frames = ase.io.read(gen_dir / "hot_failures.extxyz", ":")
    assert len(frames) == 3 and all(f.info["reason"] == "bond broken" for f in frames)
    assert [f.info["run"] for f in frames] == [0, 1, 2]
    lines = _failure_lines("hot", [(1, {"failures_by_culprit": {}}), (2, metrics)], tmp_path)
    assert lines[2] == ("- generation 2: bond broken N-H x 3 (geometries: "
                        "`generations/gen_002/hot_failures.extxyz`)")
    assert len(lines) == 4  # the generation without failures has no line


class TwoWorkersHere:
    """Two 'workers' that run their jobs in this process, one after the other."""

    workers = 2

    def map(self, fn, jobs):
        return [fn(job) for job in jobs]


def test_runs_split_over_workers_come_back_in_run_order():
    """9 runs (3 starts x 3) in chunks of runs 0-4 and 5-8: the chunk border splits the
    crushed start's runs, which fail at step 0 whichever chunk runs them; starts, failed
    frames and their run numbers follow the run order; one worker is the single batch;
    worker processes give what the in-process map gives."""
    from advsample.executors import make_executor

    crushed = NH3.copy()
    crushed.positions[1] = crushed.positions[0] + [0.2, 0.0, 0.0]
    committee = Committee.build("painn", 2, seed=1, features=8, interactions=1, cutoff=4.0,
                                n_rbf=8).eval()
    args = (committee, starts(NH3, crushed, NH3), 1500.0, 150)
    kw = {"runs_per_start": 3, "floor": 0.3, "progress": False, "seed": 4}
    whole = stability_test(*args, **kw)
    with make_executor("inprocess") as one:
        single = stability_test(*args, **kw, executor=one)
    assert single.reason == whole.reason
    np.testing.assert_array_equal(single.time_to_failure_fs, whole.time_to_failure_fs)

    split = stability_test(*args, **kw, executor=TwoWorkersHere())
    assert split.start.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert split.reason[3:6] == ["close contact"] * 3
    assert split.time_to_failure_fs[3:6].tolist() == [0.0] * 3
    failed = [r for r, reason in enumerate(split.reason) if reason != "ok"]
    assert [f.info["run"] for f in split.failed_frames] == failed
    assert all(f.info["start"] == split.start[f.info["run"]] for f in split.failed_frames)
    with make_executor("processes", workers=2) as executor:
        there = stability_test(*args, **kw, executor=executor)
    assert there.reason == split.reason
    np.testing.assert_allclose(there.time_to_failure_fs, split.time_to_failure_fs)


def test_stability_evaluator_splits_its_runs_only_when_parallel():
    from advsample.config import parse_config
    from advsample.evaluators import StabilityEvaluator
    from advsample.loop import EvaluationContext

    class Spy(TwoWorkersHere):
        calls = 0

        def map(self, fn, jobs):
            Spy.calls += len(jobs)
            return super().map(fn, jobs)

    committee = Committee.build("painn", 2, seed=1, features=8, interactions=1, cutoff=4.0,
                                n_rbf=8).eval()
    context = EvaluationContext(0, committee, starts(), np.zeros(1, int), torch.device("cpu"),
                                None, None, Spy())
    for parallel, jobs in ((False, 0), (True, 2)):
        evaluator = StabilityEvaluator(starts=[NH3], runs=4, steps=20, parallel=parallel)
        assert evaluator.evaluate(context)["runs"] == 4
        assert Spy.calls == jobs
    spec = parse_config({"system": {"molecule": "NH3"}, "oracle": {"type": "xtb"},
                         "evaluate": [{"type": "stability", "parallel": True}]}).evaluate[0]
    assert spec.parallel
