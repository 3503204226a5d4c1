"""Absurd labels are stored as "rejected" with the reason and never trained on."""

import warnings

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from helpers import labelled_nh3

from advsample.oracles.base import LabelResult, Oracle
from advsample.run import start
from advsample.screening import LabelScreen, energy_ceilings


def _ok(energy=-1.0, largest_force=1.0):
    forces = np.zeros((4, 3))
    forces[2, 1] = largest_force
    return LabelResult(energy, forces, "ok")


NH3 = molecule("NH3")


def test_limits_reject_with_the_reason_and_pass_the_rest():
    screen = LabelScreen(max_force=50.0, max_energy_above=1.0)
    ceilings = {"H3N": 0.5}  # eV/atom
    assert screen(_ok(), NH3, ceilings).status == "ok"
    hard = screen(_ok(largest_force=60.0), NH3, ceilings)
    assert hard.status == "rejected" and "force 60 eV/Å" in hard.message
    assert hard.energy == -1.0 and hard.forces is not None  # the numbers are kept
    high = screen(_ok(energy=4 * 1.6), NH3, ceilings)  # 1.6 - 0.5 = 1.1 eV/atom above
    assert high.status == "rejected" and "1.1 eV/atom" in high.message
    assert screen(_ok(energy=4 * 1.4), NH3, ceilings).status == "ok"
    assert screen(_ok(energy=100.0), NH3, {"CH4": 0.0}).status == "ok"  # formula unseen
    failed = LabelResult.failed("boom")
    assert screen(failed, NH3, ceilings) is failed
    assert LabelScreen(None, None)(_ok(energy=1e6, largest_force=1e6), NH3, ceilings).ok


def test_energy_ceilings_are_per_formula_per_atom():
    frames = labelled_nh3(5)
    expected = max(a.get_potential_energy() for a in frames) / 4
    assert energy_ceilings(frames) == {"H3N": pytest.approx(expected)}


class WarningEMT(EMT):
    """EMT whose every result comes with an SCF-style warning."""

    def calculate(self, *args, **kwargs):
        warnings.warn("SCF not converged after 100 cycles; using the last density", stacklevel=2)
        super().calculate(*args, **kwargs)


class WarningOracle(Oracle):
    name, settings = "warning-emt", {}

    def calculator(self):
        return WarningEMT()


def test_oracle_warnings_are_captured_and_reject_the_label():
    result = WarningOracle().label(NH3)
    assert result.ok and result.warnings == (
        "SCF not converged after 100 cycles; using the last density",)
    rejected = LabelScreen()(result, NH3, {})
    assert rejected.status == "rejected" and "SCF not converged" in rejected.message
    assert LabelScreen(warning_words=())(result, NH3, {}).ok


def test_rejected_labels_are_stored_counted_and_kept_out_of_training(tmp_path):
    initial = tmp_path / "init.extxyz"
    ase.io.write(initial, labelled_nh3(10), format="extxyz")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
seed: 0
system: {{molecule: NH3}}
initial: {{file: {initial}}}
oracle: {{type: emt, reject_forces_above: 3.0}}
committee: {{size: 2, hyperparameters: {{features: 8, interactions: 1, cutoff: 4.0, n_rbf: 8}}}}
train: {{epochs: 10, batch_size: 8, patience: 10}}
sampler: {{kT: 0.5, steps: 10, restarts: 2, init_scale: 0.1, min_distance: 0.5}}
select: {{max_new: 6, gate_percentile: 0, min_separation: 0.001}}
loop: {{generations: 1}}
""")
    al = start(cfg, tmp_path / "run", progress=False)
    state = al.run()
    rows = al.store.rows(generation=1)
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert rejected, "the attack should have produced some label above 3 eV/Å"
    assert all(r["message"].startswith("rejected: force") for r in rejected)
    assert all(r["energy"] is not None for r in rejected)  # kept for inspection
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(al.store.training_atoms()) == 10 + len(ok)
    assert state["rejected"] == len(rejected)
    metrics = al.history()[-1]
    assert metrics["rejected_labels"] == len(rejected)
    from advsample.report import write_report

    assert f"{len(rejected)} rejected" in write_report(al.run_dir).read_text()
