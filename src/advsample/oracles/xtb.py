"""GFN-xTB oracles through tblite's ASE calculator (molecules and periodic cells)."""

from __future__ import annotations

from ase.calculators.calculator import Calculator

from advsample.oracles.base import Oracle

METHODS = ("GFN2-xTB", "GFN1-xTB")


class XTBOracle(Oracle):
    """Tight-binding energies and forces from ``tblite.ase.TBLite``.

    method:                 "GFN2-xTB" or "GFN1-xTB"
    charge:                 total charge (e)
    uhf:                    number of unpaired electrons (multiplicity - 1)
    accuracy:               tblite numerical accuracy (smaller is tighter)
    electronic_temperature: Fermi smearing temperature (K)
    max_iterations:         SCF iterations; tblite raises when the SCF has not converged by
                            then, which :meth:`label` reports as a failed label.
    """

    def __init__(
        self,
        method: str = "GFN2-xTB",
        charge: int = 0,
        uhf: int = 0,
        accuracy: float = 1.0,
        electronic_temperature: float = 300.0,
        max_iterations: int = 250,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown xTB method {method!r}; choose one of {METHODS}")
        self.settings = {
            "type": "xtb",
            "method": method,
            "charge": int(charge),
            "uhf": int(uhf),
            "accuracy": float(accuracy),
            "electronic_temperature": float(electronic_temperature),
            "max_iterations": int(max_iterations),
        }
        self.name = method

    def calculator(self) -> Calculator:
        """A new ``tblite.ase.TBLite`` calculator with these settings (multiplicity uhf + 1)."""
        from tblite.ase import TBLite

        s = self.settings
        return TBLite(
            method=s["method"],
            charge=s["charge"],
            multiplicity=s["uhf"] + 1,
            accuracy=s["accuracy"],
            electronic_temperature=s["electronic_temperature"],
            max_iterations=s["max_iterations"],
            verbosity=0,
        )
