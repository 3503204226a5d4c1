"""What a generation is judged by: evaluators declared under ``evaluate:`` in a run config.

Each evaluator has a ``name`` (its key in the generation's metrics.json), a ``type`` and
``evaluate(context) -> dict`` of JSON-ready numbers (``context``: ``loop.EvaluationContext``);
every result carries its "type" so the report finds its plot in :data:`PLOTS` without the
config. Nothing here is specific to a molecule: the NH3 inversion path is one path generator.
"""

from dataclasses import dataclass
from typing import Any

from advsample import calibration
from advsample.evaluators import conformers, coverage, grid, md_stability, path, test_set
from advsample.evaluators.conformers import ConformerEvaluator
from advsample.evaluators.coverage import CoverageEvaluator
from advsample.evaluators.grid import GridEvaluator
from advsample.evaluators.md_stability import StabilityEvaluator
from advsample.evaluators.path import PathEvaluator
from advsample.evaluators.test_set import TestSetEvaluator

PLOTS = {"test_set": test_set.plot, "stability": md_stability.plot, "path": path.plot,
         "coverage": coverage.plot, "grid": grid.plot, "conformers": conformers.plot,
         "calibration": calibration.plot}
"""Evaluator type -> plot(entries, *axes): entries are (generation, metrics) pairs. The
loop's own per-generation calibration record (type "calibration") is drawn the same way."""

PANELS = {"test_set": 2, "stability": 1, "path": 2, "coverage": 2, "grid": 1, "conformers": 2,
          "calibration": 2}
"""Evaluator type -> how many axes its plot draws on."""


@dataclass
class Scheduled:
    """``evaluator`` run only at generations divisible by ``every`` and at a run's last
    generation (the loop reads ``every``); its numbers are stored under its own name."""

    evaluator: Any
    every: int

    @property
    def name(self) -> str:
        """The wrapped evaluator's name."""
        return self.evaluator.name

    def evaluate(self, context) -> dict:
        """The wrapped evaluator's numbers for ``context``."""
        return self.evaluator.evaluate(context)


__all__ = ["PANELS", "PLOTS", "ConformerEvaluator", "CoverageEvaluator", "GridEvaluator",
           "PathEvaluator", "Scheduled", "StabilityEvaluator", "TestSetEvaluator"]
