import numpy as np

from advsample.attack import AttackConfig
from advsample.loop import AnalyticLoopConfig, run_analytic_loop
from advsample.oracles.analytic import DoubleWell2D
from advsample.train import TrainConfig


def test_two_generations_of_attacks_lower_the_grid_error():
    cfg = AnalyticLoopConfig(
        generations=2,
        committee_size=4,
        model={"width": 32, "depth": 2},
        train=TrainConfig(epochs=400, patience=100),
        attack=AttackConfig(steps=100, lr=0.02, remove_translation=False),
    )
    rows = run_analytic_loop(cfg)
    assert [r["generation"] for r in rows] == [1, 2]
    assert rows[1]["n_points"] == rows[0]["n_points"] + rows[1]["n_new"]
    assert 0 < rows[1]["n_new"] <= 20
    assert rows[1]["rmse_grid"] < rows[0]["rmse_grid"]
    # attacked points stay inside the box, so below the box's highest true energy
    new = np.array(rows[1]["new_points"])
    surface = DoubleWell2D()
    assert (np.abs(new) <= 1.2 + 1e-12).all()
    assert surface.energy(new).max() <= surface.max_energy_in_box()
