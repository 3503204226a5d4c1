"""benchmarks/zeolites.py: the per-complex success table of the NN-MD tests."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import zeolites  # noqa: E402  (benchmarks/zeolites.py)

SUBSET = {"held_out": [{"host": "DFT", "guest": "CNC"}, {"host": "ABW", "guest": "CCN"}]}


def _row(generation: int, labels: int, per_start: list[float], culprits: dict) -> dict:
    return {"generation": generation, "labels_added": labels,
            "stability_held_out": {"runs": 4 * len(per_start),
                                   "fraction_stable_per_start": per_start,
                                   "failures_by_culprit": culprits}}


def test_by_complex_sums_runs_and_culprits_over_repeats():
    results = {"attack": [[_row(0, 0, [1.0, 0.25], {"bond broken Si-O": 3}),
                           {"generation": 1, "labels_added": 5}],  # not tested there
                          [_row(0, 0, [0.5, 0.0], {"close contact H-H": 4,
                                                   "bond broken Si-O": 2})]]}
    lines = zeolites.by_complex(results, SUBSET)
    assert "| method | generation (labels added) | repeats | DFT/CNC | ABW/CCN |" in lines[4]
    rows = [line for line in lines if line.startswith("| attack")]
    # 4 runs per start per repeat: 4 + 2 of 8 and 1 + 0 of 8 survive; Si-O 3 + 2
    assert rows == ["| attack | 0 (0, 0) | 2 | 6/8 | 1/8 | Si-O 5, close contact H-H 4 |"]


def test_by_complex_refuses_a_test_of_other_starts():
    results = {"md": [[_row(4, 20, [1.0, 1.0, 1.0], {})]]}
    with pytest.raises(ValueError, match="md generation 4: 3 starts in stability_held_out, "
                                         "2 held_out complexes"):
        zeolites.by_complex(results, SUBSET)


def _labelled_frames(n: int, seed: int) -> list:
    """n periodic frames of a small Si-O-N cell with made-up oracle labels."""
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    base = Atoms("Si2O3N", positions=[[0, 0, 0], [3.1, 0, 0], [1.55, 0.3, 0], [0, 1.6, 0],
                                      [3.1, 1.6, 0.2], [1.5, 2.9, 0.4]],
                 cell=[6.2, 5.0, 5.0], pbc=True)
    frames = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        a.calc = SinglePointCalculator(a, energy=float(rng.normal(-30.0, 0.5)),
                                       forces=rng.normal(scale=0.5, size=(len(a), 3)))
        frames.append(a)
    return frames


def test_oracle_md_errors_match_the_committee_mean_on_every_kth_frame(tmp_path):
    """Two held-out complexes (the energy labels of the second 2 eV higher): force RMSE,
    relative-energy RMSE (each complex's mean error removed) and RMS offset over complexes
    as an independent computation through the ASE calculator gives them."""
    import json

    import ase.io
    import numpy as np

    from advsample.calculator import CommitteeCalculator
    from advsample.committee import Committee

    (tmp_path / "judge").mkdir()
    complexes = [_labelled_frames(7, 3), _labelled_frames(7, 4)]
    for a in complexes[1]:
        a.calc.results["energy"] += 2.0
    for k, frames in enumerate(complexes):
        ase.io.write(tmp_path / "judge" / f"held_out_{k}_600K_4000steps.extxyz", frames)
    committee = Committee.build("painn", 2, features=8, interactions=1, cutoff=3.5, n_rbf=6,
                                dtype="float64")
    run = tmp_path / "attack" / "repeat_0" / "generations"
    for generation, tested in ((0, True), (2, False), (4, True)):
        (run / f"gen_{generation:03d}").mkdir(parents=True)
        committee.save(run / f"gen_{generation:03d}" / "committee.pt")
        metrics = {"labels_added": 5 * generation,
                   **({"stability_held_out": {"runs": 4}} if tested else {})}
        (run / f"gen_{generation:03d}" / "metrics.json").write_text(json.dumps(metrics))
    lines = zeolites.oracle_md_errors(["attack"], tmp_path, SUBSET, tmp_path / "e.json",
                                      every=3)
    assert "DFT/CNC, ABW/CCN" in lines[2] and "6 structures" in lines[2]  # frames 0, 3, 6 of each
    rows = [line.split(" | ") for line in lines if line.startswith("| attack")]
    assert [r[1] for r in rows] == ["0 (0)", "4 (20)"]  # generation 2 had no held-out test
    # independently: the committee mean through its ASE calculator on frames 0, 3, 6
    calc = CommitteeCalculator(committee)
    force_errors, relative, offsets = [], [], []
    for frames in complexes:
        energy_errors = []
        for a in frames[::3]:
            b = a.copy()
            b.calc = calc
            force_errors.append(b.get_forces() - a.get_forces())
            energy_errors.append(1e3 * (b.get_potential_energy() - a.get_potential_energy())
                                 / len(a))
        offsets.append(np.mean(energy_errors))
        relative += list(np.array(energy_errors) - offsets[-1])
    assert abs(offsets[1] - offsets[0]) > 100  # the 2 eV shift, in meV/atom
    for r in rows:
        assert float(r[2]) == pytest.approx(np.sqrt(np.mean(np.square(force_errors))),
                                            abs=6e-4)
        assert float(r[3]) == pytest.approx(np.sqrt(np.mean(np.square(relative))), abs=0.06)
        assert float(r[4].rstrip(" |")) == pytest.approx(np.sqrt(np.mean(np.square(offsets))),
                                                         abs=0.06)
    stored = json.loads((tmp_path / "e.json").read_text())["errors"]["attack"]["repeat_0"]
    assert sorted(stored) == ["0", "4"]
    assert stored["4"]["forces_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(force_errors))))
    assert stored["4"]["labels_added"] == 20


def test_oracle_md_errors_without_oracle_trajectories_add_nothing(tmp_path):
    assert zeolites.oracle_md_errors(["attack"], tmp_path, SUBSET) == []
