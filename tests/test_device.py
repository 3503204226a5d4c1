"""Everything is computed where the structures and the committee are, in their dtype.

Each workload (committee forces, every sampler, selection, the stability test, the ASE
calculator) runs on a tiny system: three molecules and a 2-atom crystal with PaiNN, or 2D
points with an MLP. It runs once on the CPU and again with the committee and the structures
moved to ``device`` (the CPU, and the GPU when there is one): the second results must lie on
``device``, be finite and equal the first (random numbers come from CPU generators on
every device, so both runs follow the same path).

Without a GPU, two checks catch the same class of bug (a tensor made with torch's defaults
instead of the batch's) on the CPU:

- dtype: with torch's default dtype float32 and float64 structures and models, or the other
  way round, every output keeps the structures' dtype;
- device: tensors that advsample code creates without an explicit ``device=`` are sent to
  the "meta" device (see :class:`UndeclaredDeviceIsMeta`), where they cannot mix with the
  CPU structures, as a CPU tensor cannot mix with a GPU batch.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from torch.overrides import TorchFunctionMode

from advsample.attack import AttackConfig, BoltzmannPrior, Candidates
from advsample.calculator import CommitteeCalculator
from advsample.committee import Committee
from advsample.samplers import (
    AdversarialSampler,
    GaussianDisplacementSampler,
    MDSampler,
    UniformBoxSampler,
)
from advsample.select import SelectConfig, gate_threshold, select
from advsample.stability import stability_test
from advsample.structures import Batch

ATTACK = AttackConfig(steps=3, lr=0.02, restarts=2, min_distance=0.5, energy_ceiling=10.0,
                      strain=True)
TOY_ATTACK = AttackConfig(steps=3, lr=0.05, restarts=2, box=(-2.0, 2.0),
                          remove_translation=False)
MD = dict(temperature_K=300.0, steps=4, dt_fs=0.5, interval=2)
RANDOM = GaussianDisplacementSampler(scale=0.05,
                                     config=AttackConfig(restarts=2, min_distance=0.5))
SELECT = SelectConfig(max_new=3, gate_percentile=50.0, min_separation=1e-3, metric="rmsd")


@dataclass
class System:
    """A committee and its labelled training structures; kT (eV/atom) of the prior."""

    committee: Committee
    training: Batch
    kT: float

    @property
    def prior(self) -> BoltzmannPrior:
        return BoltzmannPrior.from_training(self.training, self.kT)

    @property
    def seeds(self) -> Batch:
        return self.training.without_labels()

    def to(self, device: torch.device) -> System:
        """A copy with the committee and the structures on ``device``."""
        committee = copy.deepcopy(self.committee).to(device)
        return System(committee, self.training.to(device=device), self.kT)


def molecules(dtype: torch.dtype = torch.float64) -> System:
    """NH3, H2O, CH4 and a 2-atom Si crystal with made-up energies (eV); 2 tiny PaiNNs."""
    atoms = [molecule("NH3"), molecule("H2O"), molecule("CH4"), bulk("Si")]
    energy = torch.tensor([-80.0, -75.0, -40.0, -300.0], dtype=dtype)
    training = Batch.from_atoms(atoms, dtype=dtype, labels=False).with_labels(energy, None)
    committee = Committee.build("painn", 2, features=4, interactions=1, cutoff=3.0, n_rbf=4,
                                dtype=str(dtype).removeprefix("torch."))
    for member in committee.members:
        member.fit_statistics(training)
    return System(committee.eval(), training, kT=0.5)


def toy(dtype: torch.dtype = torch.float64) -> System:
    """8 labelled 2D points and 2 tiny MLPs (which compute in float64 whatever the batch)."""
    rng = np.random.default_rng(0)
    training = Batch.from_points(rng.uniform(-1, 1, (8, 2)), energy=rng.normal(0, 1, 8),
                                 dtype=dtype)
    committee = Committee.build("mlp", 2, dim=2, width=8, depth=1)
    for member in committee.members:
        member.fit_statistics(training)
    return System(committee.eval(), training, kT=1.0)


# ------------------------------------------------------------------ workloads
Result = dict[str, torch.Tensor | np.ndarray | list]


def forward(system: System) -> Result:
    out = system.committee(system.training)
    assert torch.isfinite(out.energy).all() and torch.isfinite(out.forces).all()
    return {"energy": out.energy, "forces": out.forces}


def proposal(sampler) -> Callable[[System], Result]:
    def run(system: System) -> Result:
        candidates = sampler.propose(system.committee, system.seeds, system.prior)
        return candidate_tensors(candidates)

    return run


def candidate_tensors(candidates: Candidates) -> Result:
    """Every tensor of ``candidates``, by name, after checking the feasible ones are finite."""
    ok = candidates.feasible
    assert ok.any() and torch.isfinite(candidates.batch.positions).all()
    for value in (candidates.objective, candidates.uncertainty, candidates.energy):
        assert torch.isfinite(value[ok]).all()
    names = ("objective", "uncertainty", "energy", "parent", "step", "displacement", "feasible")
    return {"positions": candidates.batch.positions, "cell": candidates.batch.cell,
            "structure": candidates.batch.structure,
            **{name: getattr(candidates, name) for name in names}}


def selection(system: System) -> Result:
    candidates = RANDOM.propose(system.committee, system.seeds, system.prior)
    threshold = gate_threshold(system.committee, system.training, SELECT)
    chosen = select(candidates, system.training, threshold, SELECT)
    assert len(chosen)
    return {"threshold": np.array(threshold), "chosen": chosen}


def stability(system: System) -> Result:
    result = stability_test(system.committee, system.seeds, temperature_K=300.0, steps=4,
                            runs_per_start=2, progress=False)
    return {"time_to_failure_fs": result.time_to_failure_fs, "reason": result.reason,
            "start": result.start}


def calculator(system: System) -> Result:
    out = {}
    for atoms in (molecule("NH3"), bulk("Si")):
        atoms.calc = CommitteeCalculator(system.committee)
        name = atoms.get_chemical_formula()
        out[f"{name} energy"] = np.array(atoms.get_potential_energy())
        out[f"{name} forces"] = atoms.get_forces()
        if atoms.pbc.all():
            out[f"{name} stress"] = atoms.get_stress()
    return out


WORKLOADS = {
    "forward": (molecules, forward),
    "forward-toy": (toy, forward),
    "attack": (molecules, proposal(AdversarialSampler(ATTACK))),
    "attack-toy": (toy, proposal(AdversarialSampler(TOY_ATTACK))),
    "random": (molecules, proposal(RANDOM)),
    "uniform-toy": (toy, proposal(UniformBoxSampler(config=TOY_ATTACK))),
    "md": (molecules, proposal(MDSampler(**MD, config=AttackConfig(restarts=2,
                                                                   min_distance=0.5)))),
    "md-toy": (toy, proposal(MDSampler(**MD))),
    "select": (molecules, selection),
    "stability": (molecules, stability),
    "calculator": (molecules, calculator),
}


def assert_same(actual: Result, expected: Result, device: torch.device) -> None:
    """Tensors of ``actual`` lie on ``device``; everything equals the CPU results ``expected``.
    (numpy arrays and lists are what the API returns on the CPU whatever the device.)"""
    assert actual.keys() == expected.keys()
    for name, value in actual.items():
        if isinstance(value, torch.Tensor):
            assert value.device.type == device.type, name
            torch.testing.assert_close(value.cpu(), expected[name], rtol=1e-6, atol=1e-9,
                                       equal_nan=True, msg=name)
        elif isinstance(value, list):
            assert value == expected[name], name
        else:
            np.testing.assert_allclose(value, expected[name], rtol=1e-6, atol=1e-9,
                                       err_msg=name)


@pytest.mark.parametrize("name", WORKLOADS)
def test_workload_on_device(device, name):
    make, run = WORKLOADS[name]
    system = make()
    assert_same(run(system.to(device)), run(system), device)


def test_checkpoint_loads_onto_device(device, tmp_path):
    system = molecules()
    system.committee.save(tmp_path / "committee.pt")
    loaded = Committee.load(tmp_path / "committee.pt", device=device)
    assert loaded.device.type == device.type
    assert all(b.device.type == device.type for b in loaded.buffers())
    expected = system.committee(system.training, forces=False).energy
    energy = loaded(system.training.to(device=device), forces=False).energy
    assert_same({"energy": energy}, {"energy": expected}, device)


# ---------------------------------------------------------- bugs seen on the CPU
@pytest.fixture(params=[(torch.float32, torch.float64), (torch.float64, torch.float32)],
                ids=["default32-batch64", "default64-batch32"])
def dtype(request):
    """The structures' and models' dtype; torch's default dtype is the other one meanwhile."""
    default, dtype = request.param
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        yield dtype
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("name", WORKLOADS)
def test_workload_keeps_the_structures_dtype(dtype, name):
    make, run = WORKLOADS[name]
    for key, value in run(make(dtype)).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert value.dtype == dtype, key


FACTORIES = {torch.arange, torch.as_tensor, torch.empty, torch.eye, torch.full, torch.linspace,
             torch.ones, torch.rand, torch.randint, torch.randn, torch.randperm, torch.tensor,
             torch.zeros}


class UndeclaredDeviceIsMeta(TorchFunctionMode):
    """Inside, a tensor that a function of advsample creates without ``device=`` is made on
    the "meta" device (shapes, no data) instead of the CPU; torch's own code is unaffected."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if func in FACTORIES and "device" not in kwargs and caller.startswith("advsample."):
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


# these build structures with Batch.from_points / from_atoms, made on the CPU by design
BUILDS_STRUCTURES = {"uniform-toy", "calculator"}


@pytest.mark.parametrize("name", sorted(WORKLOADS.keys() - BUILDS_STRUCTURES))
def test_workload_creates_no_tensor_on_the_default_device(name):
    make, run = WORKLOADS[name]
    system = make()
    expected = run(system)
    with UndeclaredDeviceIsMeta():
        actual = run(system)
    assert_same(actual, expected, torch.device("cpu"))
