"""Ground-truth oracles: picklable objects that label one ``ase.Atoms`` at a time.

>>> oracle = make_oracle({"type": "xtb", "method": "GFN2-xTB"})
>>> result = oracle.label(atoms)          # LabelResult, never raises
>>> make_oracle(oracle.settings)          # the settings rebuild the same oracle
"""

from __future__ import annotations

from typing import Any

from advsample.oracles.analytic import AnalyticOracle
from advsample.oracles.ase_calc import ASECalculatorOracle
from advsample.oracles.base import LabelResult, Oracle
from advsample.oracles.pyscf import PySCFOracle
from advsample.oracles.timeout import TimeLimitedOracle
from advsample.oracles.xtb import XTBOracle


def _emt(**kwargs: Any) -> ASECalculatorOracle:
    return ASECalculatorOracle("emt", **kwargs)


BUILDERS = {
    "analytic": AnalyticOracle,
    "xtb": XTBOracle,
    "pyscf": PySCFOracle,
    "emt": _emt,
    "ase": ASECalculatorOracle,
}


def make_oracle(spec: dict[str, Any]) -> Oracle:
    """An oracle from a config dict: its "type" picks the class, the other keys are arguments.

    {"type": "xtb", "method": "GFN2-xTB"}, {"type": "pyscf", "preset": "bp86-d3bj/def2-svp"},
    {"type": "emt"}, {"type": "analytic", "surface": "double_well_2d"},
    {"type": "ase", "calculator": "ase.calculators.lj:LennardJones",
    "kwargs": {"sigma": 2.5}}. Raises ValueError for an unknown type or bad arguments.

    A "timeout_s" key (seconds; None: no limit) wraps the oracle of the other keys in a
    :class:`TimeLimitedOracle`: {"type": "xtb", "timeout_s": 60}.
    """
    args = dict(spec)
    if "timeout_s" in args:
        timeout_s = args.pop("timeout_s")
        inner = make_oracle(args)
        return inner if timeout_s is None else TimeLimitedOracle(inner, timeout_s)
    kind = args.pop("type", None)
    if kind not in BUILDERS:
        raise ValueError(f"unknown oracle type {kind!r}; known types: {sorted(BUILDERS)}")
    try:
        return BUILDERS[kind](**args)
    except TypeError as exc:
        raise ValueError(f"bad arguments for oracle type {kind!r}: {exc}") from exc


__all__ = [
    "AnalyticOracle",
    "ASECalculatorOracle",
    "LabelResult",
    "Oracle",
    "PySCFOracle",
    "TimeLimitedOracle",
    "XTBOracle",
    "make_oracle",
]
