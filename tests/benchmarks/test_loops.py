"""benchmarks/loops.py: config merging, --set overrides, configure, collect (no loop is run)."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py, imported as the drivers import it)
import loops  # noqa: E402  (benchmarks/loops.py)

from advsample.config import ConfigError  # noqa: E402

EXAMPLE = "examples/ammonia_xtb.yaml"


def test_merge_nested_replaces_non_mappings_and_copies():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2], "s": "keep"}
    over = {"a": {"y": {"q": 3}, "z": 4}, "l": [9], "n": {"new": True}}
    out = loops.merge(base, over)
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4}, "l": [9], "s": "keep",
                   "n": {"new": True}}
    assert base == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2], "s": "keep"}
    out["a"]["y"]["p"] = 99  # a deep copy: base untouched
    assert base["a"]["y"]["p"] == 1
    assert loops.merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}  # scalar -> mapping
    assert loops.merge({"a": {"b": 2}}, {"a": None}) == {"a": None}


def config():
    return {"train": {"epochs": 10},
            "evaluate": [{"type": "path", "points": 21},
                         {"type": "stability", "name": "stab_a", "runs": 32},
                         {"type": "stability", "name": "stab_b", "runs": 8}]}


def test_set_key_nested_values_parsed_as_yaml():
    c = config()
    loops.set_key(c, "train.epochs=3")
    loops.set_key(c, "committee.hyperparameters.features=8")  # missing levels are made
    loops.set_key(c, "loop.convergence.plateau_generations=null")
    loops.set_key(c, "select.gate=0.5")
    loops.set_key(c, "sampler.type=md")
    loops.set_key(c, "initial.note=a=b")  # split at the first "="
    assert c["train"]["epochs"] == 3
    assert c["committee"] == {"hyperparameters": {"features": 8}}
    assert c["loop"]["convergence"]["plateau_generations"] is None
    assert c["select"]["gate"] == 0.5 and c["sampler"]["type"] == "md"
    assert c["initial"]["note"] == "a=b"
    loops.set_key(c, "train={epochs: 5, lr: 0.1}")  # a whole mapping
    assert c["train"] == {"epochs": 5, "lr": 0.1}


def test_set_key_list_items_by_index_name_or_type():
    c = config()
    loops.set_key(c, "evaluate.0.points=5")  # by index
    loops.set_key(c, "evaluate.path.generator=umbrella_inversion")  # by type (no name)
    loops.set_key(c, "evaluate.stab_b.runs=2")  # by name
    loops.set_key(c, "evaluate.1.steps=20")
    assert c["evaluate"][0] == {"type": "path", "points": 5, "generator": "umbrella_inversion"}
    assert c["evaluate"][1] == {"type": "stability", "name": "stab_a", "runs": 32, "steps": 20}
    assert c["evaluate"][2]["runs"] == 2
    loops.set_key(c, "evaluate.2={type: test_set, file: x.extxyz}")  # replace an item
    assert c["evaluate"][2] == {"type": "test_set", "file": "x.extxyz"}


@pytest.mark.parametrize("assignment", ["evaluate.stability.runs=2",  # named: not its type
                                        "evaluate.missing.runs=2", "evaluate.7.runs=2"])
def test_set_key_bad_list_item_raises(assignment):
    c = config()
    with pytest.raises(ValueError, match="is not in the list"):
        loops.set_key(c, assignment)
    assert c == config()


def test_set_key_without_value_raises():
    with pytest.raises(ValueError):
        loops.set_key(config(), "train.epochs")


def test_configure_merges_files_replaces_reference_and_applies_sets(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({
        "train": {"epochs": 7},
        "evaluate": [{"type": "test_set", "file": "{reference}/test.extxyz"},
                     {"type": "stability", "runs": 4, "steps": 100}]}))
    last = tmp_path / "last.yaml"
    last.write_text("train: {epochs: 9}\n")
    reference = common.REPO / "runs" / "benchmarks" / "x" / "reference"
    c = loops.configure([EXAMPLE, str(over), str(last)], reference,
                        ["evaluate.stability.runs=2", "committee.size=2"])
    example = yaml.safe_load((common.REPO / EXAMPLE).read_text())
    assert c["train"]["epochs"] == 9 and c["train"]["lr"] == example["train"]["lr"]
    assert c["evaluate"][0]["file"] == "runs/benchmarks/x/reference/test.extxyz"
    assert c["evaluate"][1]["runs"] == 2 and c["committee"]["size"] == 2
    assert "{reference}" not in json.dumps(c)


def test_configure_validates(tmp_path):
    with pytest.raises(ConfigError, match="train.bogus: unknown key"):
        loops.configure([EXAMPLE], tmp_path, ["train.bogus=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("committee: {size: many}\n")
    with pytest.raises(ConfigError, match="committee.size"):
        loops.configure([EXAMPLE, str(bad)], tmp_path, [])


def test_collect_finished_and_unfinished_loops(tmp_path):
    rows = [{"generation": g, "labels": 10 + 2 * g, "labels_added": 2 * g} for g in range(3)]
    (tmp_path / "attack" / "repeat_0").mkdir(parents=True)
    (tmp_path / "attack" / "repeat_0" / "history.json").write_text(json.dumps(rows))
    sampling = {"generation": 0, "seconds": 3.0, "nn_evaluations": 40}
    for g, r in enumerate(rows[:2]):  # md repeat 1: killed after generation 1, sampled 0
        d = tmp_path / "md" / "repeat_1" / "generations" / f"gen_{g:03d}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(r))
        if g == 0:
            (d / "sampling.json").write_text(json.dumps(sampling))
    found = loops.collect(["attack", "md", "random"], 2, tmp_path)
    results = found.results
    # an unfinished loop's rows are what ActiveLearning.history gives: sampling included,
    # so its compute counts the sampling it did
    assert results == {"attack": [rows], "md": [[{**rows[0], "sampling": sampling}, rows[1]]]}
    assert found.unfinished == ["md/repeat_1 (2 generations evaluated)"]
    assert found.runs == {"attack": [tmp_path / "attack" / "repeat_0"],
                          "md": [tmp_path / "md" / "repeat_1"]}
    assert found.finished == {"attack": [rows]}
    assert found.finished["attack"][0] is results["attack"][0]
    assert loops.with_compute(results)["md"][0][1]["sampling_evaluations"] == 40


def _toy_config() -> dict:
    """A tiny double-well benchmark config with three methods: two that differ only in how
    they sample, one that trains differently."""
    return {
        "seed": 0, "system": {"dim": 2, "box": [-1.2, 1.2]},
        "initial": {"method": "uniform_box", "frames": 100, "energy_max": -2.0},
        "oracle": {"type": "analytic", "surface": "double_well_2d"},
        "committee": {"model": "mlp", "size": 2, "hyperparameters": {"width": 16, "depth": 2}},
        "train": {"epochs": 20, "min_epochs": 5, "batch_size": None, "forces_weight": 1.0},
        "sampler": {"type": "attack", "kT": 5.0, "steps": 10, "max_displacement": None},
        "select": {"max_new": 5, "min_separation": 0.05},
        "loop": {"generations": 1, "convergence": {"plateau_generations": None}},
        "evaluate": [{"type": "grid", "resolution": 10}],
        "methods": {"attack": {}, "random": {"sampler": {"type": "random"}},
                    "longer": {"train": {"epochs": 30}}},
    }


def test_methods_that_sample_differently_share_one_generation_0(tmp_path):
    import types

    args = types.SimpleNamespace(methods=["attack", "random", "longer"], repeats=1,
                                 work_dir=tmp_path, workers=1)
    stale = tmp_path / "random" / "repeat_0"  # an earlier start that never trained gen 0
    stale.mkdir(parents=True)
    old = loops.merge(loops.method_config(_toy_config(), "random"), {"loop": {"generations": 3}})
    (stale / "config.yaml").write_text(yaml.safe_dump(old))
    loops.run_methods(_toy_config(), args)
    shared = tmp_path / loops.GENERATION_0 / "repeat_0"
    assert (shared / "history.json").exists()
    first = (shared / "generations/gen_000/train.json").read_text()
    for method in ("attack", "random"):  # generation 0 copied, not trained again
        run = tmp_path / method / "repeat_0"
        assert (run / "generations/gen_000/train.json").read_text() == first
        history = json.loads((run / "history.json").read_text())
        assert [h["generation"] for h in history] == [0, 1] and history[1]["new_labels"] > 0
        assert not list(run.glob("**/*.partial"))
    own = json.loads((tmp_path / "longer/repeat_0/generations/gen_000/train.json").read_text())
    assert own != json.loads(first)  # another training config: its own generation 0
    assert not (tmp_path / loops.GENERATION_0 / "longer").exists()


def test_a_method_run_alone_later_starts_from_the_shared_generation_0(tmp_path):
    import types

    config = _toy_config()
    config["methods"]["late"] = {"sampler": {"type": "random"}, "select": {"max_new": 3}}
    run = types.SimpleNamespace(repeats=1, work_dir=tmp_path, workers=1)
    loops.run_methods(config, types.SimpleNamespace(**vars(run), methods=["attack", "random"]))
    shared = (tmp_path / loops.GENERATION_0 / "repeat_0/generations/gen_000/train.json")
    loops.run_methods(config, types.SimpleNamespace(**vars(run), methods=["late"]))
    late = tmp_path / "late" / "repeat_0"
    assert (late / "generations/gen_000/train.json").read_text() == shared.read_text()
    assert [h["generation"] for h in json.loads((late / "history.json").read_text())] == [0, 1]
    loops.run_methods(config, types.SimpleNamespace(**vars(run), methods=["longer"]))
    own = tmp_path / "longer/repeat_0/generations/gen_000/train.json"  # trains differently
    assert json.loads(own.read_text()) != json.loads(shared.read_text())


def test_compute_counts_sampling_evaluations_per_loop():
    history = [{"generation": 0, "labels_added": 0, "train_seconds": 2.0,
                "sampling": {"seconds": 1.0, "nn_evaluations": 100}},
               {"generation": 1, "labels_added": 5, "train_seconds": 3.0,
                "sampling": {"seconds": 1.5, "nn_evaluations": 40}},
               {"generation": 2, "labels_added": 9, "train_seconds": 4.0}]
    results = loops.with_compute({"attack": [history]})
    rows = results["attack"][0]
    assert [r["nn_seconds"] for r in rows] == [2.0, 6.0, 11.5]
    assert [r["sampling_evaluations"] for r in rows] == [0, 100, 140]
    table = loops.compute_table(results)
    assert "structures evaluated" in table and "| 140 " in table


def test_label_energies_are_above_the_initial_minimum_of_the_same_formula(tmp_path):
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from advsample.evaluators.conformers import thermal_ceiling
    from advsample.store import Store

    def labelled(symbols, energy):
        a = Atoms(symbols)
        a.positions = np.arange(3 * len(a)).reshape(-1, 3) * 1.5
        a.calc = SinglePointCalculator(a, energy=energy, forces=np.zeros((len(a), 3)))
        return a

    run = tmp_path / "attack" / "repeat_0"
    run.mkdir(parents=True)
    store = Store(run / "labels.db")
    store.add_labelled([labelled("NH3", -10.0), labelled("NH3", -9.8), labelled("H2O", -5.0)])
    ceiling = thermal_ceiling(4, 300.0)
    store.add_labelled([labelled("NH3", -10.0 + 0.5 * ceiling),
                        labelled("NH3", -10.0 + 3 * ceiling), labelled("H2O", -4.0),
                        labelled("CH4", 1.0)],  # no initial CH4: not counted
                       generation=1, sampler="attack")
    out = loops.label_energies(["attack", "random"], 1, tmp_path, 300.0)
    assert out["random"] == [None]
    (r,) = out["attack"]
    above = [0.5 * ceiling, 3 * ceiling, 1.0]
    assert r["labels"] == 3 and r["median_eV"] == pytest.approx(np.median(above))
    # H2O's ceiling is its own (3 atoms: 0.18 eV, below its 1.0 eV); NH3's 3x is above
    assert thermal_ceiling(3, 300.0) < 1.0
    assert r["thermal"] == pytest.approx(1 / 3)
    table = loops.label_energy_table(out, 300.0)
    assert "| attack | 3 |" in table and "| random | - |" in table


@pytest.mark.parametrize("files", [
    ["examples/double_well.yaml"],
    *(importlib.import_module(driver).FILES
      for driver in ("alanine", "ammonia", "ammonia_dft", "zeolites")),
], ids=["double_well", "alanine", "ammonia", "ammonia_dft", "zeolites"])
def test_shipped_configs_validate_with_every_method(files, tmp_path):
    """Every example and every benchmark method config (as the drivers stack them) passes the
    package's validation: a renamed or removed setting fails here, not hours into a run."""
    config = loops.configure(files, tmp_path / "reference", [])
    for method in config.get("methods", {}):
        assert loops.method_config(config, method)["sampler"]["type"]


def test_finished_loops_run_on_when_their_method_gets_more_generations(tmp_path, capsys):
    from advsample.config import load_config

    config = {"seed": 0, "system": {"molecule": "NH3"}, "oracle": {"type": "emt"},
              "initial": {"method": "normal_modes", "frames": 4},
              "loop": {"generations": 2}}
    for k in range(2):
        run_dir = tmp_path / "md" / f"repeat_{k}"
        (run_dir / loops.CHECKPOINT_0).parent.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "seed": k}))
        (run_dir / "history.json").write_text("[]")  # finished
    (tmp_path / "md" / "repeat_0" / loops.CHECKPOINT_0).write_bytes(b"")  # repeat 1 unstarted

    def stored(k):
        return load_config(tmp_path / "md" / f"repeat_{k}" / "config.yaml").loop

    more = loops.merge(config, {"loop": {"generations": 5, "label_budget": 40}})
    loops.raise_limits({"md": more}, 2, tmp_path)
    assert stored(0).generations == 5 and stored(0).label_budget is None  # no limit stays
    assert not (tmp_path / "md" / "repeat_0" / "history.json").exists()  # it will run on
    assert "loop.generations 2 -> 5; it runs on" in capsys.readouterr().out
    assert stored(1).generations == 2  # a loop without generation 0 starts from the config
    assert (tmp_path / "md" / "repeat_1" / "history.json").exists()
    loops.raise_limits({"md": loops.merge(config, {"loop": {"generations": 3}})}, 2, tmp_path)
    assert stored(0).generations == 5  # never lowered
    assert {**config, "seed": 0} == yaml.safe_load(
        (tmp_path / "md" / "repeat_0" / "config.original.yaml").read_text())
