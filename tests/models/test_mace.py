"""MACE through the physics battery of test_painn, training, attacks and safe checkpoints.

mace-torch is optional: without it the file is skipped. Its presence is checked with
find_spec rather than by importing it, because importing mace sets
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the rest of the test session; advsample imports mace
only through :func:`advsample.models.mace.import_mace`, which puts the environment back.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

if importlib.util.find_spec("mace") is None:
    pytest.skip("mace-torch is not installed", allow_module_level=True)

import torch
from ase.build import molecule
from tblite.ase import TBLite
from test_painn import (
    FD_STEP,
    FD_TOLERANCE,
    TOLERANCE,
    EnergyModelBattery,
    crystals,
    molecules,
)

from advsample.attack import AttackConfig, BoltzmannPrior, attack
from advsample.committee import Committee
from advsample.models import build_model
from advsample.models.mace import NO_WEIGHTS_ONLY, MACEEnergy
from advsample.structures import Batch
from advsample.train import TrainConfig, evaluate, fit, split_indices

BATTERY_ELEMENTS = [1, 6, 7, 8, 14]  # H, C, N, O of the molecules, Si of the crystals
TINY = {  # hyperparameters of a tiny MACE, seconds to build and evaluate
    "cutoff": 3.0,
    "channels": 8,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 2,
    "interactions": 2,
    "n_rbf": 6,
    "radial_mlp": [16],
    "readout_hidden": 8,
    "skin": 0.3,
    "dtype": "float64",
}


class TestMACE(EnergyModelBattery):
    cutoff = TINY["cutoff"]

    def make_model(self) -> MACEEnergy:
        return MACEEnergy(elements=BATTERY_ELEMENTS, **TINY)

    def test_unknown_element_rejected(self, model):
        with pytest.raises(ValueError, match=r"knows elements \[1, 6, 7, 8, 14\].*\[9\]"):
            model(self.batch([molecule("HF")]))

    def test_flat_coordinates_rejected(self, model):
        with pytest.raises(ValueError, match="d = 3"):
            model(Batch.from_points([[0.0, 1.0]]))

    def test_float32_network_matches_float64(self, model, rng):
        single = build_model("mace", **{**model.hyperparameters, "dtype": "float32"})
        single.load_state_dict(model.state_dict())
        batch = self.batch(molecules(rng) + crystals(rng))
        energy = single(batch)
        assert energy.dtype == self.dtype
        torch.testing.assert_close(energy, model(batch), **TOLERANCE[torch.float32])

    def test_strain_derivative_matches_finite_differences(self, model, rng):
        """dE/dε of X(I + ε), cell(I + ε): the periodic shifts carry the cell's gradient."""
        batch = self.batch(crystals(rng)[1:])

        def energy(strain: torch.Tensor) -> torch.Tensor:
            deformation = torch.eye(3, dtype=self.dtype) + strain
            strained = batch.with_positions(batch.positions @ deformation)
            return model(replace(strained, cell=batch.cell @ deformation))[0]

        strain = torch.zeros(3, 3, dtype=self.dtype, requires_grad=True)
        (gradient,) = torch.autograd.grad(energy(strain), strain)
        assert gradient.abs().max() > 1e-3
        difference = torch.zeros(3, 3, dtype=self.dtype)
        with torch.no_grad():
            for k, l in np.ndindex(3, 3):
                step = torch.zeros(3, 3, dtype=self.dtype)
                step[k, l] = FD_STEP
                difference[k, l] = (energy(step) - energy(-step)) / (2 * FD_STEP)
        torch.testing.assert_close(gradient, difference, **FD_TOLERANCE)

    def test_fit_statistics_sets_mean_neighbours_and_loading_restores_it(self, model, rng):
        atoms_list = molecules(rng)
        batch = self.batch(atoms_list).with_labels(torch.tensor([1.0, 2.0, 3.0]), None)
        model.fit_statistics(batch)
        n_atoms = sum(len(a) for a in atoms_list)
        mean_neighbours = sum(len(a) * (len(a) - 1) for a in atoms_list) / n_atoms  # all < 3 Å
        assert float(model.avg_num_neighbors) == pytest.approx(mean_neighbours)
        fresh = self.make_model()
        fresh.load_state_dict(model.state_dict())
        assert [b.avg_num_neighbors for b in fresh.mace.interactions] == [mean_neighbours] * 2
        torch.testing.assert_close(fresh(batch), model(batch), rtol=0, atol=0)


# ------------------------------------------------------------------ checkpoints
class Payload:
    """Unpickling this object runs code: it writes the file ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_write, (self.path,))


def _write(path: str) -> None:
    with open(path, "w") as handle:
        handle.write("unpickled")


def tiny_committee(elements: list[int], seed: int = 0) -> Committee:
    return Committee.build("mace", 2, seed=seed, elements=elements, **TINY)


def test_checkpoints_stay_weights_only_after_mace_was_built(tmp_path):
    before = os.environ.get(NO_WEIGHTS_ONLY)
    committee = tiny_committee([1, 7])
    assert os.environ.get(NO_WEIGHTS_ONLY) == before
    ammonia = Batch.from_atoms([molecule("NH3")], labels=False)
    committee.members[0].fit_statistics(ammonia.with_labels(torch.tensor([-3.0]), None))

    committee.save(tmp_path / "mace.pt")
    loaded = Committee.load(tmp_path / "mace.pt")
    for a, b in zip(committee.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    committee.eval()
    assert torch.equal(loaded(ammonia).energy, committee(ammonia).energy)
    assert torch.equal(loaded(ammonia).forces, committee(ammonia).forces)

    marker = tmp_path / "unpickled"
    torch.save({**committee.state(), "payload": Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        Committee.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_fresh_process_imports_mace_lazily_and_restores_the_environment():
    script = textwrap.dedent(
        f"""
        import os, sys
        import torch
        import advsample, advsample.committee, advsample.models.mace
        assert "mace" not in sys.modules, "advsample imported mace eagerly"
        from advsample.committee import Committee
        Committee.build("mace", 2, elements=[1, 7], **{TINY!r})
        assert "mace" in sys.modules
        assert {NO_WEIGHTS_ONLY!r} not in os.environ, "mace's variable was left set"
        assert torch.get_default_dtype() == torch.float32
        """
    )
    env = {k: v for k, v in os.environ.items() if k != NO_WEIGHTS_ONLY}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # mace's notice about cuequivariance is not printed


# ------------------------------------------------------------- training, attack
@pytest.fixture(scope="module")
def ammonia_data() -> Batch:
    """30 NH3 geometries rattled by 0.1 Å, labelled by GFN2-xTB."""
    rng = np.random.default_rng(3)
    atoms_list = []
    for _ in range(30):
        atoms = molecule("NH3")
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        atoms.get_forces()
        atoms_list.append(atoms)
    return Batch.from_atoms(atoms_list)


@pytest.fixture(scope="module")
def trained(ammonia_data) -> tuple[Committee, dict, TrainConfig]:
    """A tiny MACE committee, its validation errors before training, and the config."""
    committee = tiny_committee([1, 7], seed=4)
    cfg = TrainConfig(epochs=40, lr=1e-2, val_fraction=0.2, patience=1000, seed=1)
    train_idx, val_idx = split_indices(ammonia_data.n_structures, cfg.val_fraction, cfg.seed)
    for member in committee.members:
        member.fit_statistics(ammonia_data.select(train_idx))
    before = evaluate(committee, ammonia_data.select(val_idx))
    return committee, before, fit(committee, ammonia_data, cfg)


def test_training_lowers_validation_error(trained):
    committee, before, result = trained
    assert result.val_forces_rmse < 0.2 * before["forces_rmse"]
    assert result.val_energy_rmse < 0.5 * before["energy_rmse"]


def test_attack_raises_the_objective(trained, ammonia_data):
    committee, _, _ = trained
    prior = BoltzmannPrior.from_training(ammonia_data, kT=0.2)
    seeds = ammonia_data.select([0, 1]).without_labels()
    cfg = AttackConfig(steps=15, lr=0.02, min_distance=0.6)
    candidates, history = attack(committee, seeds, prior, cfg, record_history=True)
    assert candidates.feasible.all()
    assert (candidates.objective > history[0] + 1.0).all()
    assert (candidates.displacement > 0.0).all()
