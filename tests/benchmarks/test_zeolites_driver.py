"""benchmarks/zeolites.py: the per-complex success table of the NN-MD tests."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import zeolites  # noqa: E402  (benchmarks/zeolites.py)

SUBSET = {"held_out": [{"host": "DFT", "guest": "CNC"}, {"host": "ABW", "guest": "CCN"}]}


def _row(generation: int, labels: int, per_start: list[float], culprits: dict) -> dict:
    return {"generation": generation, "labels_added": labels,
            "stability_held_out": {"runs": 4 * len(per_start),
                                   "fraction_stable_per_start": per_start,
                                   "failures_by_culprit": culprits}}


def test_by_complex_sums_runs_and_culprits_over_repeats():
    results = {"attack": [[_row(0, 0, [1.0, 0.25], {"bond broken Si-O": 3}),
                           {"generation": 1, "labels_added": 5}],  # not tested there
                          [_row(0, 0, [0.5, 0.0], {"close contact H-H": 4,
                                                   "bond broken Si-O": 2})]]}
    lines = zeolites.by_complex(results, SUBSET)
    assert "| method | generation (labels added) | repeats | DFT/CNC | ABW/CCN |" in lines[4]
    rows = [line for line in lines if line.startswith("| attack")]
    # 4 runs per start per repeat: 4 + 2 of 8 and 1 + 0 of 8 survive; Si-O 3 + 2
    assert rows == ["| attack | 0 (0, 0) | 2 | 6/8 | 1/8 | Si-O 5, close contact H-H 4 |"]


def test_by_complex_refuses_a_test_of_other_starts():
    results = {"md": [[_row(4, 20, [1.0, 1.0, 1.0], {})]]}
    with pytest.raises(ValueError, match="md generation 4: 3 starts in stability_held_out, "
                                         "2 held_out complexes"):
        zeolites.by_complex(results, SUBSET)
