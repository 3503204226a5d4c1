"""Any ASE calculator as an oracle, named by ASE short name or import path."""

from __future__ import annotations

import importlib
import json
from typing import Any

from ase.calculators.calculator import Calculator, get_calculator_class

from advsample.oracles.base import Oracle


def resolve_calculator(spec: str) -> type[Calculator]:
    """The calculator class named by ``spec``.

    ``spec`` is an ASE short name ("emt", "lj", "morse", ...) or an import path
    "package.module:ClassName" / "package.module.ClassName".
    """
    if ":" not in spec and "." not in spec:
        try:
            return get_calculator_class(spec.lower())
        except Exception as exc:
            raise ValueError(f"unknown ASE calculator {spec!r}: {exc}") from exc
    module_name, sep, class_name = spec.partition(":")
    if not sep:
        module_name, _, class_name = spec.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import calculator {spec!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Calculator)):
        raise ValueError(f"{spec!r} is not an ASE Calculator class")
    return cls


class ASECalculatorOracle(Oracle):
    """Labels from an ASE calculator class built as ``cls(**kwargs)`` in the worker.

    calculator: "emt" or another ASE short name, or "package.module:ClassName"
    kwargs:     JSON-serialisable constructor arguments (they are stored as provenance)
    """

    def __init__(self, calculator: str = "emt", kwargs: dict[str, Any] | None = None):
        resolve_calculator(calculator)  # fail now, not in every worker
        kwargs = dict(kwargs or {})
        try:
            json.dumps(kwargs)
        except TypeError as exc:
            raise ValueError(f"calculator kwargs must be JSON-serialisable: {exc}") from exc
        self.settings = {"type": "ase", "calculator": calculator, "kwargs": kwargs}
        self.name = calculator

    def calculator(self) -> Calculator:
        """A new instance of the configured ASE calculator class, built with ``kwargs``."""
        return resolve_calculator(self.settings["calculator"])(**self.settings["kwargs"])
