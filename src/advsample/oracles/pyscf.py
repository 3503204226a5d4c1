"""Molecular Hartree-Fock / DFT oracles with PySCF (energy + analytic gradient).

Dispersion corrections (D3, D4) come from the package ``pyscf-dispersion``
(``pip install pyscf-dispersion``, a dependency of advsample), which PySCF picks up
through ``mf.disp``; the correction enters both the energy and the gradient.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.units import Bohr, Hartree

from advsample.oracles.base import Oracle

# Named levels of theory. "bp86-d3bj/def2-svp" reproduces the paper's ammonia data
# (shared/data/README.md): Becke88 exchange + P86 correlation with VWN5 as its local part
# (the ORCA/Turbomole "BP86", not PySCF's "BP86" which uses PZ81), no density fitting,
# plus D3(BJ) with the BP86 parameters.
PRESETS: dict[str, dict[str, str]] = {
    "bp86-d3bj/def2-svp": {
        "xc": "GGA_X_B88,GGA_C_P86VWN",
        "basis": "def2-svp",
        "dispersion": "d3bj:bp86",
    },
}
DISPERSION_VERSIONS = ("d3bj", "d3zero", "d3bjm", "d3zerom", "d3op", "d4")


class SCFNotConverged(CalculationFailed):
    """The SCF did not converge within ``max_cycle`` iterations."""


class PySCFCalculator(Calculator):
    """ASE calculator running one PySCF SCF + analytic gradient per geometry (molecules only).

    Parameters (see :class:`PySCFOracle`): xc, basis, charge, spin, dispersion, max_cycle,
    conv_tol. Raises :class:`SCFNotConverged` when the SCF does not converge and
    ``CalculationFailed`` for periodic input.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters: dict[str, Any] = {
        "xc": "hf",
        "basis": "sto-3g",
        "charge": 0,
        "spin": 0,
        "dispersion": None,
        "max_cycle": 100,
        "conv_tol": 1e-9,
    }

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Run the SCF and its analytic gradient: energy (eV) and forces [n, 3] (eV/Å)."""
        from pyscf import dft, gto, scf

        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise CalculationFailed("the PySCF oracle handles molecules only (pbc must be False)")
        p = self.parameters
        mol = gto.M(
            atom=list(zip(self.atoms.get_chemical_symbols(), self.atoms.positions, strict=True)),
            unit="Angstrom",
            basis=p.basis,
            charge=p.charge,
            spin=p.spin,
            verbose=0,
        )
        mf = scf.HF(mol) if p.xc.lower() == "hf" else dft.KS(mol, xc=p.xc)
        mf.max_cycle = p.max_cycle
        mf.conv_tol = p.conv_tol
        if p.dispersion:
            mf.disp = p.dispersion
        energy = mf.kernel()
        if not mf.converged:
            raise SCFNotConverged(f"SCF not converged in {p.max_cycle} cycles")
        gradient = mf.nuc_grad_method().kernel()  # [n, 3] Hartree/Bohr
        self.results["energy"] = self.results["free_energy"] = float(energy) * Hartree
        self.results["forces"] = -gradient * (Hartree / Bohr)


class PySCFOracle(Oracle):
    """Energy (eV) and forces (eV/Å) of a molecule from a PySCF SCF and its analytic gradient.

    xc:         "hf" for Hartree-Fock, else a PySCF/libxc functional ("b3lyp",
                "GGA_X_B88,GGA_C_P86VWN", ...)
    basis:      basis-set name ("sto-3g", "def2-svp", ...)
    charge:     total charge (e)
    spin:       2S = number of unpaired electrons (restricted if 0, unrestricted otherwise)
    dispersion: None, or a version "d3bj" | "d3zero" | "d3bjm" | "d3zerom" | "d3op" | "d4",
                optionally with the functional whose damping parameters to use after a colon
                ("d3bj:bp86"); without it the parameters of ``xc`` are used, so a libxc
                expression needs the colon form. Requires ``pyscf-dispersion``.
    max_cycle:  SCF iterations; not converged by then -> failed label
    conv_tol:   SCF energy convergence (Hartree)
    preset:     a name in :data:`PRESETS` supplying xc, basis and dispersion; explicit values
                for those must then agree with the preset.
    """

    def __init__(
        self,
        xc: str | None = None,
        basis: str | None = None,
        charge: int = 0,
        spin: int = 0,
        dispersion: str | None = None,
        max_cycle: int = 100,
        conv_tol: float = 1e-9,
        preset: str | None = None,
    ):
        level = {"xc": xc, "basis": basis, "dispersion": dispersion}
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown PySCF preset {preset!r}; known: {sorted(PRESETS)}")
            for key, value in PRESETS[preset].items():
                if level[key] is not None and level[key] != value:
                    raise ValueError(
                        f"preset {preset!r} sets {key}={value!r}, conflicting with {level[key]!r}"
                    )
                level[key] = value
        if level["xc"] is None or level["basis"] is None:
            raise ValueError("PySCFOracle needs xc and basis (or a preset)")
        if level["dispersion"] is not None:
            _check_dispersion(level["dispersion"])
        self.settings = {
            "type": "pyscf",
            "preset": preset,
            "xc": level["xc"],
            "basis": level["basis"],
            "dispersion": level["dispersion"],
            "charge": int(charge),
            "spin": int(spin),
            "max_cycle": int(max_cycle),
            "conv_tol": float(conv_tol),
        }
        suffix = f"-{level['dispersion']}" if level["dispersion"] else ""
        self.name = preset or f"{level['xc']}{suffix}/{level['basis']}"

    def calculator(self) -> Calculator:
        """A new :class:`PySCFCalculator` with these settings."""
        kwargs = {k: v for k, v in self.settings.items() if k not in ("type", "preset")}
        return PySCFCalculator(**kwargs)


def _check_dispersion(dispersion: str) -> None:
    """Fail early on an unknown version or a missing pyscf-dispersion (imported lazily later)."""
    version = dispersion.split(":", 1)[0].lower()
    if version not in DISPERSION_VERSIONS:
        raise ValueError(
            f"unknown dispersion {dispersion!r}; versions: {DISPERSION_VERSIONS}, "
            "optionally followed by ':functional'"
        )
    if importlib.util.find_spec("pyscf.dispersion") is None:
        raise ImportError(
            f"dispersion {dispersion!r} needs the package pyscf-dispersion: "
            "pip install pyscf-dispersion"
        )
