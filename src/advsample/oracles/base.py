"""The oracle protocol: ground-truth labels (energy, forces) for one structure at a time.

An oracle is a small picklable object holding only its settings; the ASE calculator that
does the work is built by :meth:`Oracle.calculator` in whichever process calls
:meth:`Oracle.label`, so oracles can be shipped to a process pool or a Dask worker.

Units follow ASE: energies in eV, forces in eV/Å, wall times in seconds.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

MAX_MESSAGE = 300  # characters kept of a failure message


@dataclass
class LabelResult:
    """The outcome of one oracle call.

    energy:  total energy (eV), None when failed
    forces:  float [n_atoms, 3] (eV/Å), None when failed
    status:  "ok", "failed", or "rejected" (labels computed but judged unusable for
             training, see :mod:`advsample.screening`; they are kept for inspection)
    message: one line; empty when ok, the reason otherwise
    seconds: wall time of the call (s)
    warnings: the Python warnings the oracle emitted during the call, one line each
    """

    energy: float | None
    forces: np.ndarray | None
    status: Literal["ok", "failed", "rejected"]
    message: str = ""
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the call succeeded (status "ok")."""
        return self.status == "ok"

    @classmethod
    def failed(cls, message: str, seconds: float = 0.0) -> LabelResult:
        """A failed result whose message is cut to one line of at most ``MAX_MESSAGE`` chars."""
        line = " ".join(str(message).split())
        return cls(None, None, "failed", line[:MAX_MESSAGE], seconds)


def describe_exception(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Oracle(ABC):
    """Base class of all oracles.

    Subclasses set ``name`` (short, human readable) and ``settings`` (JSON-serialisable; for
    the oracles of this package, ``make_oracle(oracle.settings)`` rebuilds an equal oracle) in
    their constructor and implement :meth:`calculator`.
    """

    name: str
    settings: dict[str, Any]

    @abstractmethod
    def calculator(self) -> Calculator:
        """A new ASE calculator for these settings, built in the calling process.

        Use it to drive ASE dynamics or finite differences with the oracle (see
        :mod:`advsample.initial_data`); it raises on failure like any ASE calculator.
        """

    def label(self, atoms: Atoms) -> LabelResult:
        """Energy (eV) and forces [n, 3] (eV/Å) of ``atoms``; never raises.

        Any exception, a non-finite result, forces of the wrong shape or a non-converged SCF
        (which the calculators raise as errors) give ``status="failed"`` with a one-line message.
        Forces are the raw ones, with no constraint of ``atoms`` applied. Each call uses a new
        calculator, so a label never depends on earlier calls (an SCF restarted from the
        previous structure's wavefunction would). ``atoms`` is not modified. Warnings the
        calculator emits are caught and returned in ``warnings``.
        """
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                work = atoms.copy()
                work.calc = self.calculator()
                energy = float(work.get_potential_energy())
                forces = np.array(work.get_forces(apply_constraint=False), dtype=float)
        except Exception as exc:  # every failure becomes a failed label
            return LabelResult.failed(describe_exception(exc), time.perf_counter() - start)
        seconds = time.perf_counter() - start
        if not np.isfinite(energy):
            return LabelResult.failed(f"non-finite energy {energy}", seconds)
        if forces.shape != (len(atoms), 3):
            return LabelResult.failed(
                f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)", seconds
            )
        if not np.isfinite(forces).all():
            return LabelResult.failed("non-finite forces", seconds)
        said = tuple(dict.fromkeys(" ".join(str(w.message).split())[:MAX_MESSAGE]
                                   for w in caught))
        return LabelResult(energy, forces, "ok", "", seconds, said)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"
