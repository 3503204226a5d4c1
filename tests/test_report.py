"""The report of a run directory: one section and plot per evaluator, the convergence curve,
numbers from metrics.json in the table, and `status`."""

import json

from test_loop import toy_config

from advsample.config import parse_config
from advsample.report import status, write_report
from advsample.run import build


def test_report_and_status_of_a_toy_run(tmp_path):
    cfg = toy_config(loop={"generations": 1, "convergence": {"plateau_generations": None}},
                     train={"epochs": 150})
    run_dir = tmp_path / "run"
    build(parse_config(cfg), run_dir, progress=False).run()
    path = write_report(run_dir)
    text = path.read_text()
    out = run_dir / "report"
    for png in ("generations.png", "convergence.png", "evaluator_grid.png"):
        assert (out / png).stat().st_size > 5000
    assert "## grid (grid)" in text and "Stopped: reached 1 generations." in text
    m1 = json.loads((run_dir / "generations" / "gen_001" / "metrics.json").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert f"{m1['grid']['rmse_grid']:.4g}" in row and f"| {m1['labels']} |" in row
    lines = status(run_dir).splitlines()
    assert "generation 0: ok" in lines[1] and "grid RMSE" in lines[-2]
    assert lines[-1] == "  stopped: reached 1 generations"
