"""Oracles: labels are right (forces = −∇E), failures are reported never raised, configs build
them; plus the oracle-driven initial data (MD frames, normal-mode samples)."""

import pickle
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from advsample.initial_data import finite_difference_hessian, normal_mode_sampling, oracle_md
from advsample.oracles import (
    ASECalculatorOracle,
    LabelResult,
    PySCFOracle,
    XTBOracle,
    make_oracle,
)

AMMONIA_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ammonia_paper.extxyz"


def distorted_nh3(seed=0):
    atoms = molecule("NH3")
    atoms.rattle(0.05, seed=seed)
    return atoms


def lj_trimer():
    """Equilateral LJ trimer at the pair minimum r = 2^(1/6) σ (σ = 1 Å, ε = 1 eV)."""
    r = 2 ** (1 / 6)
    return Atoms("Ar3", positions=[[0, 0, 0], [r, 0, 0], [r / 2, r * np.sqrt(3) / 2, 0]])


LJ = {
    "type": "ase",
    "calculator": "ase.calculators.lj:LennardJones",
    "kwargs": {"sigma": 1.0, "epsilon": 1.0, "rc": 10.0},
}


def assert_forces_are_minus_gradient(oracle, atoms, h, atol, n_directions=3, seed=0):
    """−F·d equals the central difference of E along random unit directions d."""
    result = oracle.label(atoms)
    assert result.ok, result.message
    rng = np.random.default_rng(seed)
    for _ in range(n_directions):
        d = rng.normal(size=(len(atoms), 3))
        d /= np.linalg.norm(d)
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions += sign * h * d
            energies.append(oracle.label(moved).energy)
        slope = (energies[0] - energies[1]) / (2 * h)
        assert slope == pytest.approx(-np.sum(result.forces * d), abs=atol)


# ------------------------------------------------------------------------- xTB
def test_xtb_nh3_forces_are_minus_energy_gradient():
    oracle = XTBOracle("GFN2-xTB", accuracy=0.01)
    assert_forces_are_minus_gradient(oracle, distorted_nh3(), h=1e-3, atol=1e-3)


def test_xtb_labels_a_periodic_cell():
    result = XTBOracle("GFN1-xTB").label(bulk("Si", "diamond", a=5.43))
    assert result.ok, result.message
    assert result.forces.shape == (2, 3)
    assert np.abs(result.forces).max() < 1e-3  # diamond: forces vanish by symmetry


def test_xtb_scf_nonconvergence_is_a_failed_label():
    result = XTBOracle(max_iterations=1).label(distorted_nh3())
    assert result.status == "failed" and result.energy is None and result.forces is None
    assert "not converged" in result.message


# ------------------------------------------------------------------------- ASE
def test_emt_cu_cell_matches_direct_calculator_and_gradient():
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.05, seed=1)
    oracle = make_oracle({"type": "emt"})
    result = oracle.label(atoms)
    reference = atoms.copy()
    reference.calc = EMT()
    assert result.ok and result.seconds >= 0
    assert result.energy == pytest.approx(reference.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(result.forces, reference.get_forces(), atol=1e-12)
    assert atoms.calc is None  # label works on a copy
    assert_forces_are_minus_gradient(oracle, atoms, h=1e-4, atol=1e-5)


def test_labels_are_raw_forces_whatever_the_constraints():
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.05, seed=2)
    free = make_oracle({"type": "emt"}).label(atoms)
    atoms.set_constraint(FixAtoms(indices=[0]))
    fixed = make_oracle({"type": "emt"}).label(atoms)
    assert np.abs(fixed.forces[0]).max() > 0.01
    np.testing.assert_allclose(fixed.forces, free.forces)


class RaisingCalculator(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("boom\nsecond line")


class NaNCalculator(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": np.nan, "forces": np.zeros((len(self.atoms), 3))}


def test_calculator_that_raises_gives_one_line_failure():
    result = ASECalculatorOracle(f"{__name__}:RaisingCalculator").label(distorted_nh3())
    assert result.status == "failed"
    assert result.message == "RuntimeError: boom second line"


def test_non_finite_energy_is_a_failed_label():
    result = ASECalculatorOracle(f"{__name__}.NaNCalculator").label(distorted_nh3())
    assert result.status == "failed" and "non-finite energy" in result.message


# ----------------------------------------------------------------------- PySCF
def test_pyscf_hf_h2_energy_and_forces():
    """HF/STO-3G H2 at 0.74 Å: E ≈ −1.1167 Hartree; forces = −dE/dr along the bond."""
    oracle = PySCFOracle("hf", "sto-3g")
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    result = oracle.label(h2)
    assert result.ok, result.message
    assert result.energy / units.Hartree == pytest.approx(-1.1167, abs=1e-3)
    np.testing.assert_allclose(result.forces[0], -result.forces[1], atol=1e-8)
    h = 1e-3
    stretched = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74 + s]]) for s in (h, -h)]
    slope = (oracle.label(stretched[0]).energy - oracle.label(stretched[1]).energy) / (2 * h)
    assert result.forces[1, 2] == pytest.approx(-slope, abs=1e-4)


def test_pyscf_scf_nonconvergence_is_a_failed_label():
    result = PySCFOracle("hf", "sto-3g", max_cycle=1).label(distorted_nh3())
    assert result.status == "failed" and "not converged in 1 cycles" in result.message


def test_pyscf_rejects_periodic_cells_and_wrong_spin_as_failures():
    oracle = PySCFOracle("hf", "sto-3g")
    assert "molecules only" in oracle.label(bulk("Si")).message
    assert oracle.label(molecule("NH2")).status == "failed"  # 9 electrons, spin 0


def test_pyscf_preset_resolves_the_paper_level():
    oracle = make_oracle({"type": "pyscf", "preset": "bp86-d3bj/def2-svp"})
    assert oracle.name == "bp86-d3bj/def2-svp"
    assert oracle.settings["xc"] == "GGA_X_B88,GGA_C_P86VWN"
    assert oracle.settings["basis"] == "def2-svp"
    assert oracle.settings["dispersion"] == "d3bj:bp86"


@pytest.mark.slow
@pytest.mark.skipif(not AMMONIA_DATA.exists(), reason="shared ammonia data not available")
def test_pyscf_preset_reproduces_the_paper_ammonia_labels():
    """Relative energy and forces of two frames agree with the data set (README: 0.012
    kcal/mol energy RMSE, 0.064 kcal/mol/Å force RMSE)."""
    frames = ase.io.read(AMMONIA_DATA, index=":2")
    oracle = PySCFOracle(preset="bp86-d3bj/def2-svp")
    results = [oracle.label(a) for a in frames]
    assert all(r.ok for r in results)
    reference = [a.get_potential_energy() for a in frames]
    assert results[1].energy - results[0].energy == pytest.approx(
        reference[1] - reference[0], abs=2e-3
    )
    for result, atoms in zip(results, frames, strict=True):
        np.testing.assert_allclose(result.forces, atoms.get_forces(), atol=1e-2)


# ---------------------------------------------------------------- make_oracle
@pytest.mark.parametrize(
    "spec",
    [
        {"type": "xtb", "method": "GFN1-xTB", "charge": 0},
        {"type": "pyscf", "preset": "bp86-d3bj/def2-svp"},
        {"type": "pyscf", "xc": "b3lyp", "basis": "def2-svp", "spin": 0},
        {"type": "emt"},
        LJ,
    ],
)
def test_settings_rebuild_the_oracle_and_survive_pickling(spec):
    oracle = make_oracle(spec)
    assert make_oracle(oracle.settings).settings == oracle.settings
    assert pickle.loads(pickle.dumps(oracle)).settings == oracle.settings


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"type": "gaussian"}, "unknown oracle type 'gaussian'"),
        ({"method": "GFN2-xTB"}, "unknown oracle type None"),
        ({"type": "xtb", "methd": "GFN2-xTB"}, "bad arguments for oracle type 'xtb'"),
        ({"type": "xtb", "method": "GFN3-xTB"}, "unknown xTB method"),
        ({"type": "pyscf", "preset": "nope"}, "unknown PySCF preset"),
        ({"type": "pyscf", "preset": "bp86-d3bj/def2-svp", "basis": "sto-3g"}, "conflicting"),
        ({"type": "pyscf", "xc": "b3lyp"}, "needs xc and basis"),
        (
            {"type": "pyscf", "xc": "b3lyp", "basis": "def2-svp", "dispersion": "d9"},
            "unknown dispersion",
        ),
        ({"type": "ase", "calculator": "no_such_module:Calc"}, "cannot import calculator"),
        ({"type": "ase", "calculator": "numpy:ndarray"}, "not an ASE Calculator"),
        ({"type": "ase", "calculator": "nonsense"}, "unknown ASE calculator"),
    ],
)
def test_make_oracle_errors_name_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        make_oracle(spec)


def test_failed_result_message_is_one_short_line():
    result = LabelResult.failed("a\n  b\t" + "x" * 1000)
    assert "\n" not in result.message and result.message.startswith("a b x")
    assert len(result.message) <= 300


# --------------------------------------------------------------- initial data
def test_oracle_md_frames_carry_the_oracle_labels_and_are_seeded():
    oracle = make_oracle(LJ)
    frames = oracle_md(
        lj_trimer(), oracle, temperature_K=50, steps=40, timestep_fs=2.0, interval=10, seed=3
    )
    assert len(frames) == 40 // 10 + 1
    last = oracle.label(frames[-1])
    assert frames[-1].get_potential_energy() == pytest.approx(last.energy, abs=1e-10)
    np.testing.assert_allclose(frames[-1].get_forces(), last.forces, atol=1e-10)
    assert not np.allclose(frames[0].positions, frames[-1].positions)
    again = oracle_md(lj_trimer(), oracle, 50, 40, 2.0, 10, seed=3)
    np.testing.assert_allclose(again[-1].positions, frames[-1].positions)


def test_finite_difference_hessian_of_lj_dimer():
    """Bond stiffness of an LJ dimer at its minimum: V''(r) = 72 ε / (2^(1/3) σ²)."""
    dimer = Atoms("Ar2", positions=[[0, 0, 0], [2 ** (1 / 6), 0, 0]])
    hessian = finite_difference_hessian(dimer, make_oracle(LJ), step=1e-4)
    assert hessian[0, 0] == pytest.approx(72 / 2 ** (1 / 3), rel=1e-5)
    assert hessian[0, 3] == pytest.approx(-72 / 2 ** (1 / 3), rel=1e-5)


def test_normal_mode_samples_have_harmonic_mean_energy():
    """Boltzmann-distributed harmonic modes: <E − E0> = (modes / 2) kT, 3 modes for a trimer;
    rigid rotations and translations are not excited."""
    oracle = make_oracle(LJ)
    trimer = lj_trimer()
    e0 = oracle.label(trimer).energy
    temperature = 10.0
    samples = normal_mode_sampling(trimer, oracle, temperature, n_samples=400, seed=0)
    assert len(samples) == 400
    excess = np.array([a.get_potential_energy() for a in samples]) - e0
    assert excess.mean() == pytest.approx(1.5 * units.kB * temperature, rel=0.15)
    shift = np.array([a.get_center_of_mass() for a in samples]) - trimer.get_center_of_mass()
    assert np.abs(shift).max() < 1e-10
