"""The one active-learning loop: toys through the same code path as molecules, the
convergence stop, the fixed validation split, and the core's imports."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from advsample import loop as loop_module
from advsample.config import parse_config
from advsample.loop import ConvergenceRule
from advsample.oracles.analytic import DoubleWell2D
from advsample.run import build


def toy_config(**overrides) -> dict:
    """A small 2D double-well run: 4 MLPs, short training and attacks."""
    cfg = {
        "seed": 0,
        "system": {"dim": 2, "box": [-1.2, 1.2]},
        "initial": {"method": "uniform_box", "frames": 400, "energy_max": -2.0},
        "oracle": {"type": "analytic", "surface": "double_well_2d"},
        "committee": {"model": "mlp", "size": 4, "hyperparameters": {"width": 32, "depth": 2}},
        "train": {"epochs": 400, "batch_size": None, "forces_weight": 1.0, "patience": 100,
                  "bootstrap": False},
        "sampler": {"kT": 5.0, "steps": 100, "lr": 0.02, "restarts": 2,
                    "max_displacement": None},
        "select": {"max_new": 20, "min_separation": 0.05},
        "loop": {"generations": 2, "convergence": {"plateau_generations": None}},
        "evaluate": [{"type": "grid", "resolution": 40}],
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def test_toy_generations_lower_the_grid_error_inside_the_box():
    al = build(parse_config(toy_config()), None, progress=False)
    state = al.run()
    history = al.history()
    assert [h["generation"] for h in history] == [0, 1, 2]
    assert state["reason"] == "reached 2 generations"
    assert history[1]["labels"] == history[0]["labels"] + history[1]["new_labels"]
    assert 0 < history[1]["new_labels"] <= 20
    # NN cost of sampling: at least one committee pass per attack step of every restart
    n_seeds, steps, restarts = history[0]["labels"], 100, 2
    assert history[0]["sampling"]["nn_evaluations"] >= n_seeds * restarts * steps
    assert history[2]["grid"]["rmse_grid"] < history[0]["grid"]["rmse_grid"]
    surface = DoubleWell2D()
    new = np.array([a.positions[0, :2] for a in al.store.training_atoms()
                    if a.info["generation"] > 0])
    assert (np.abs(new) <= 1.2 + 1e-12).all()  # attacked points stay inside the box
    assert surface.energy(new).max() <= surface.max_energy_in_box()
    stored = np.array([a.get_potential_energy() for a in al.store.training_atoms()
                       if a.info["generation"] > 0])
    np.testing.assert_allclose(stored, surface.energy(new))  # labels are the surface's


def test_parallel_run_on_worker_processes_lowers_the_error_with_one_pool(monkeypatch):
    """train.parallel + sampler.parallel on 2 worker processes: the run works as in one
    process (labels counted, the workers' NN evaluations counted, the error falls), and
    one process pool serves all its stages (labels, training, sampling)."""
    from concurrent.futures import ProcessPoolExecutor

    pools = []
    original = ProcessPoolExecutor.__init__

    def counting(self, *args, **kwargs):
        pools.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "__init__", counting)
    cfg = toy_config(train={"parallel": True}, sampler={"parallel": True},
                     executor={"kind": "processes", "workers": 2})
    al = build(parse_config(cfg), None, progress=False)
    al.run()
    history = al.history()
    assert len(pools) == 1
    assert 0 < history[1]["new_labels"] <= 20
    assert history[0]["sampling"]["nn_evaluations"] >= history[0]["labels"] * 2 * 100
    assert history[2]["grid"]["rmse_grid"] < history[0]["grid"]["rmse_grid"]


def test_convergence_rule_target_and_plateau():
    rule = ConvergenceRule(target=0.1, plateau_generations=None)
    assert rule.check([1.0, 0.5]) is None
    assert "below the target" in rule.check([1.0, 0.05])
    rule = ConvergenceRule(plateau_generations=2, plateau_fraction=0.1)
    assert rule.check([1.0, 0.5]) is None  # too few generations to judge
    assert rule.check([1.0, 0.5, 0.3]) is None  # fell by more than 10 % within 2
    assert "fell less than 10 %" in rule.check([1.0, 0.5, 0.48, 0.47])
    assert rule.check([1.0, 0.5, 0.48, 0.4]) is None  # a new low >10 % below 0.5
    assert ConvergenceRule(statistic="max").value(np.array([1.0, 3.0])) == 3.0
    assert ConvergenceRule(percentile=50).value(np.array([1.0, 2.0, 3.0])) == 2.0


def test_convergence_stop_fires_on_a_toy_absolute_and_plateau():
    cfg = toy_config(loop={"generations": 4,
                           "convergence": {"target": 1e9, "plateau_generations": None}})
    al = build(parse_config(cfg), None, progress=False)
    state = al.run()
    assert state["generation"] == 0 and "below the target" in state["reason"]
    assert al.store.count() == al.store.count(generation=0)  # nothing was labelled
    # a plateau that asks for a 99.9 % drop per generation fires after one generation
    cfg = toy_config(loop={"generations": 4, "convergence": {
        "plateau_generations": 1, "plateau_fraction": 0.999}})
    al = build(parse_config(cfg), None, progress=False)
    state = al.run()
    assert state["generation"] == 1 and "fell less than" in state["reason"]
    assert len(state["uncertainty_statistic"]) == 2


def test_an_evaluator_with_every_runs_on_its_generations_and_the_last():
    short = {"train": {"epochs": 30, "min_epochs": 10}, "sampler": {"steps": 10}}
    cfg = toy_config(loop={"generations": 3}, **short,
                     evaluate=[{"type": "grid", "resolution": 10},
                               {"type": "grid", "name": "sparse", "resolution": 10,
                                "every": 2}])
    al = build(parse_config(cfg), None, progress=False)
    al.run()
    assert [("sparse" in h, "grid" in h) for h in al.history()] == [
        (True, True), (False, True), (True, True), (True, True)]  # 0, 2 and the last, 3
    # a run stopped early by its convergence rule is evaluated at the generation it stops on
    cfg = toy_config(loop={"generations": 4, "convergence": {
        "plateau_generations": 1, "plateau_fraction": 0.999}}, **short,
        evaluate=[{"type": "grid", "resolution": 10, "every": 3}])
    al = build(parse_config(cfg), None, progress=False)
    state = al.run()
    assert state["generation"] == 1
    assert ["grid" in h for h in al.history()] == [True, True]


def test_validation_split_is_fixed_on_arrival(monkeypatch):
    al = build(parse_config(toy_config(train={"val_fraction": 0.2})), None, progress=False)
    early = np.array([0] * 30 + [1] * 10)
    later = np.concatenate([early, [2] * 10])
    train_a, val_a = al.validation_split(early)
    train_b, val_b = al.validation_split(later)
    # the structures that were there keep their side of the split
    assert set(val_a.tolist()) == {i for i in val_b.tolist() if i < 40}
    assert set(train_a.tolist()) == {i for i in train_b.tolist() if i < 40}
    assert len(val_b) == 6 + 2 + 2  # every generation contributes its own fraction


def test_warm_start_never_validates_old_weights_on_their_training_data(monkeypatch):
    seen = []
    real_fit = loop_module.fit

    def spy(committee, data, cfg, warm_start=False, split=None):
        seen.append((data.positions.clone(), split, warm_start))
        return real_fit(committee, data, cfg, warm_start=warm_start, split=split)

    monkeypatch.setattr(loop_module, "fit", spy)
    cfg = toy_config(train={"warm_start": True, "epochs": 100, "val_fraction": 0.2},
                     loop={"generations": 2, "convergence": {"plateau_generations": None}})
    build(parse_config(cfg), None, progress=False).run()
    assert [w for *_, w in seen] == [False, True, True]
    for (pos_a, (train_a, _), _), (pos_b, (_, val_b), _) in zip(seen, seen[1:]):
        trained = {tuple(p) for p in pos_a[train_a].tolist()}
        validated = {tuple(p) for p in pos_b[val_b].tolist()}
        assert not trained & validated


@pytest.mark.parametrize("module", ["structures", "committee", "attack", "select", "loop",
                                    "train", "uncertainty"])
def test_core_imports_no_oracle_store_cli_or_plotting(module):
    code = (f"import sys; import advsample.{module}; "
            "bad = [m for m in sys.modules if m.startswith(('advsample.oracles', "
            "'advsample.store', 'advsample.cli', 'advsample.report', 'matplotlib', "
            "'advsample.evaluators', 'advsample.run'))]; print(bad); assert not bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_device_setting_resolves():
    assert loop_module.resolve_device("cpu") == torch.device("cpu")
    assert loop_module.resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            loop_module.resolve_device("cuda")


def test_auto_kT_follows_the_fluctuation_of_the_initial_energies():
    al = build(parse_config(toy_config(sampler={"kT": "auto"})), None, progress=False)
    al.parts.initial_data()
    energies = np.array([a.get_potential_energy() for a in al.store.training_atoms()])
    dim = al.settings.dim  # one "atom" per point: dim modes
    assert al.kT() == pytest.approx(4 * energies.std() / np.sqrt(dim / 2))
    assert al.initial_spread() == pytest.approx(energies.max() - energies.min())
    assert build(parse_config(toy_config()), None, progress=False).kT() == 5.0


def test_target_error_uses_the_previous_committees_calibration():
    cfg = toy_config(sampler={"target_error": 0.5}, loop={"generations": 2, "convergence": {
        "plateau_generations": None}})
    al = build(parse_config(cfg), None, progress=False)
    al.run()
    assert al.target_sigma(0) == 0.5  # no calibration yet: raw sigma
    scale = al._load("calibration", 0)["scale"]
    assert scale > 0 and al.target_sigma(1) == pytest.approx(0.5 / scale)


def test_molecule_loop_takes_the_energy_ceiling_from_the_initial_data(tmp_path, monkeypatch):
    """energy_above_initial 'auto' reaches the attack as the initial per-atom spread, and the
    ceiling's reference set is generation 0's labels, not the growing training set."""
    import ase.io
    from helpers import labelled_nh3

    frames = tmp_path / "nh3.extxyz"
    ase.io.write(frames, labelled_nh3(8), format="extxyz")
    cfg = {"seed": 0, "system": {"molecule": "NH3"}, "initial": {"file": str(frames)},
           "oracle": {"type": "emt"},
           "committee": {"size": 2, "hyperparameters": {"features": 8, "interactions": 1}},
           "train": {"epochs": 5, "batch_size": 4},
           "sampler": {"steps": 3, "restarts": 1},
           "select": {"max_new": 3, "gate_percentile": 0.0},
           "loop": {"generations": 2, "convergence": {"plateau_generations": None}},
           "evaluate": []}
    al = build(parse_config(cfg), None, progress=False)
    seen = []
    real = loop_module.sample_generation

    def spy(committee, training, sampler, kT, select_cfg, seeds=None, initial=None,
            kT_ladder=0):
        seen.append((sampler.config.energy_above_initial, training.n_structures,
                     initial.n_structures))
        return real(committee, training, sampler, kT, select_cfg, seeds=seeds,
                    initial=initial, kT_ladder=kT_ladder)

    monkeypatch.setattr(loop_module, "sample_generation", spy)
    al.run()
    energies = [a.get_potential_energy() / len(a) for a in al.store.training_atoms()
                if a.info["generation"] == 0]
    assert len(seen) == 2
    for above, _, n_initial in seen:
        assert above == pytest.approx(max(energies) - min(energies))  # one formula: no refs
        assert n_initial == 8
    assert seen[1][1] > 8  # the training set grew; the ceiling's reference did not
