"""The molecular active-learning run: resumable stages in a run directory.

Layout of a run directory::

    config.yaml                    the configuration the run was started with
    labels.db                      every structure with labels and provenance (Store)
    reference.json                 the oracle's inversion path (umbrella_report only)
    generations/gen_NNN/committee.pt   committee trained on generations 0..NNN
    generations/gen_NNN/metrics.json   its errors (and barrier), written after evaluation
    generations/gen_NNN/candidates.extxyz  every candidate the sampler proposed from it
    stopped.json                   why the run ended

Generation g: train (skipped if its checkpoint exists) -> evaluate -> sample from the
training structures and write the chosen ones to the store as "pending" rows of generation
g + 1 in one transaction (skipped if such rows exist) -> label every pending row, each label
committed as it finishes -> generation g + 1. The store and the files are the state: a
killed run started again continues at the first stage whose output is missing, and a finished
oracle call is never repeated.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.build import molecule

from advsample.attack import AttackConfig
from advsample.calculator import predict
from advsample.committee import Committee
from advsample.config import RunConfig, load_config
from advsample.executors import make_executor
from advsample.loop import sample_generation
from advsample.oracles import make_oracle
from advsample.samplers import AdversarialSampler, GaussianDisplacementSampler, MDSampler
from advsample.select import SelectConfig
from advsample.store import Store
from advsample.structures import Batch
from advsample.train import TrainConfig, fit, fit_members_separately

log = logging.getLogger("advsample")
CONFIG_NAME = "config.yaml"


class ActiveLearning:
    """One run of the loop in ``run_dir`` with configuration ``config``."""

    def __init__(self, config: RunConfig, run_dir: str | Path, progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.run_dir / "labels.db")
        self.oracle = make_oracle(config.oracle.spec())

    # ------------------------------------------------------------- creation
    @classmethod
    def start(cls, config_path: str | Path, run_dir: str | Path, progress: bool = True):
        """A new run from a YAML file, or the existing run in ``run_dir`` (resumed)."""
        run_dir = Path(run_dir)
        stored = run_dir / CONFIG_NAME
        if stored.exists():
            if Path(config_path).exists() and Path(config_path).read_text() != stored.read_text():
                log.warning("%s already holds a run: continuing it with its own %s, not %s",
                            run_dir, CONFIG_NAME, config_path)
            return cls.resume(run_dir, progress)
        config = load_config(config_path)
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config_path, stored)
        return cls(config, run_dir, progress)

    @classmethod
    def resume(cls, run_dir: str | Path, progress: bool = True):
        run_dir = Path(run_dir)
        if not (run_dir / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG_NAME})")
        return cls(load_config(run_dir / CONFIG_NAME), run_dir, progress)

    # ---------------------------------------------------------------- paths
    def generation_dir(self, g: int) -> Path:
        return self.run_dir / "generations" / f"gen_{g:03d}"

    def checkpoint(self, g: int) -> Path:
        return self.generation_dir(g) / "committee.pt"

    # --------------------------------------------------------------- stages
    def initial_structure(self):
        system = self.config.system
        if system.molecule:
            return molecule(system.molecule)
        path = Path(system.file)
        if not path.exists():
            raise FileNotFoundError(f"system.file {path} does not exist")
        return ase.io.read(path)

    def ensure_initial_data(self) -> None:
        """Generation 0: import the initial file or run oracle MD / normal modes, once."""
        if self.store.count(generation=0) > 0:
            return
        init = self.config.initial
        if init.file:
            self.store.import_extxyz(init.file, generation=0, sampler="initial")
            return
        from advsample.initial_data import normal_mode_sampling, oracle_md
        from advsample.umbrella import relaxed

        atoms = self.initial_structure()
        if init.optimize_first:
            atoms = relaxed(atoms, self.oracle.calculator())
        log.info("initial data: %s at %.0f K, %d frames", init.method, init.temperature_K,
                 init.frames)
        if init.method == "md":
            frames = oracle_md(atoms, self.oracle, init.temperature_K,
                               steps=init.interval * (init.frames - 1),
                               timestep_fs=init.timestep_fs, interval=init.interval,
                               seed=self.config.seed)
        else:
            frames = normal_mode_sampling(atoms, self.oracle, init.temperature_K,
                                          n_samples=init.frames, seed=self.config.seed)
        path = self.run_dir / "initial.extxyz"
        ase.io.write(path, frames, format="extxyz")
        self.store.import_extxyz(path, generation=0, sampler="initial")

    def training_set(self, max_generation: int) -> tuple[Batch, list[int]]:
        """Labelled structures of generations <= max_generation and their store row ids."""
        atoms = self.store.training_atoms(max_generation=max_generation)
        if not atoms:
            raise ValueError(f"{self.store.url}: no labelled structures to train on")
        return Batch.from_atoms(atoms), [a.info["store_id"] for a in atoms]

    def train(self, g: int) -> Committee:
        path = self.checkpoint(g)
        if path.exists():
            return Committee.load(path)
        cfg = self.config
        data, _ = self.training_set(g)
        committee = None
        if cfg.train.warm_start and g > 0 and self.checkpoint(g - 1).exists():
            committee = Committee.load(self.checkpoint(g - 1))
        warm = committee is not None
        if committee is None:
            committee = Committee.build(cfg.committee.model, cfg.committee.size,
                                        seed=cfg.seed * 100 + g, **cfg.committee.hyperparameters)
        t = cfg.train
        train_cfg = TrainConfig(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size,
                                energy_weight=t.energy_weight, forces_weight=t.forces_weight,
                                val_fraction=t.val_fraction, patience=t.patience,
                                lr_patience=t.lr_patience, seed=cfg.seed * 100 + g,
                                progress=self.progress)
        if t.parallel:
            e = cfg.executor
            with make_executor(e.kind, e.workers, e.address) as executor:
                result = fit_members_separately(committee, data, train_cfg, executor, warm)
        else:
            result = fit(committee, data, train_cfg, warm_start=warm)
        self.generation_dir(g).mkdir(parents=True, exist_ok=True)
        (self.generation_dir(g) / "train.json").write_text(json.dumps(
            {**result.as_dict(), "n_train": data.n_structures}, indent=1))
        committee.save(path)
        return committee

    def evaluate(self, g: int, committee: Committee) -> dict:
        path = self.generation_dir(g) / "metrics.json"
        if path.exists():
            return json.loads(path.read_text())
        metrics = json.loads((self.generation_dir(g) / "train.json").read_text())
        metrics["generation"] = g
        metrics["labels"] = self.store.count(status="ok")
        if self.config.umbrella_report:
            from advsample.umbrella import barrier

            ref = self.reference_path()
            energies, variances = predict(committee, ref["atoms"])
            e = energies.numpy()
            metrics["path_energy"] = (e - e[0]).tolist()
            metrics["path_force_variance"] = variances.numpy().tolist()
            metrics["barrier"] = barrier(e)
            metrics["barrier_reference"] = ref["barrier"]
            metrics["barrier_error"] = metrics["barrier"] - ref["barrier"]
        path.write_text(json.dumps(metrics, indent=1))
        return metrics

    def reference_path(self) -> dict:
        """The oracle's inversion path (cached in reference.json)."""
        from advsample.umbrella import barrier, inversion_path, relaxed, umbrella_coordinate

        path = self.run_dir / "reference.json"
        if path.exists():
            ref = json.loads(path.read_text())
        else:
            calc = self.oracle.calculator()
            atoms = self.initial_structure()
            minimum = relaxed(atoms, calc)
            planar = minimum.copy()
            planar.positions[0] += umbrella_coordinate(planar.positions) * _normal(planar)
            planar = relaxed(planar, calc)
            geometries = inversion_path(minimum, planar, 21)
            energies = []
            for a in geometries:
                a.calc = calc
                energies.append(a.get_potential_energy())
            ref = {"numbers": minimum.numbers.tolist(),
                   "positions": [a.positions.tolist() for a in geometries],
                   "energy": (np.array(energies) - energies[0]).tolist(),
                   "umbrella": [float(umbrella_coordinate(a.positions)) for a in geometries],
                   "barrier": barrier(energies)}
            path.write_text(json.dumps(ref))
        from ase import Atoms

        ref["atoms"] = [Atoms(ref["numbers"], positions=p) for p in ref["positions"]]
        return ref

    def sampler(self, g: int):
        s = self.config.sampler
        attack_cfg = AttackConfig(
            steps=s.steps, lr=s.lr, init_scale=s.init_scale, restarts=s.restarts,
            reduce=s.reduce, max_displacement=s.max_displacement, min_distance=s.min_distance,
            energy_ceiling=s.energy_ceiling, remove_translation=True,
            seed=self.config.seed * 1000 + g, progress=self.progress)
        if s.type == "random":
            return GaussianDisplacementSampler(scale=s.random_scale, config=attack_cfg)
        if s.type == "md":
            return MDSampler(temperature_K=s.md_temperature_K, steps=s.md_steps,
                             dt_fs=s.md_timestep_fs, interval=s.md_interval,
                             max_uncertainty=s.md_max_uncertainty, config=attack_cfg)
        return AdversarialSampler(config=attack_cfg)

    def sample(self, g: int, committee: Committee) -> int:
        """Write the chosen candidates of generation g + 1 as pending rows; their number."""
        existing = self.store.count(generation=g + 1)
        if existing:
            return existing
        s, sel = self.config.sampler, self.config.select
        training, train_ids = self.training_set(g)
        seed_index = torch.arange(training.n_structures)
        if s.seeds is not None and s.seeds < training.n_structures:
            rng = np.random.default_rng(self.config.seed * 1000 + g)
            seed_index = torch.as_tensor(
                np.sort(rng.choice(training.n_structures, s.seeds, replace=False)))
        select_cfg = SelectConfig(max_new=sel.max_new, gate_percentile=sel.gate_percentile,
                                  gate_absolute=sel.gate_absolute,
                                  min_separation=sel.min_separation, metric=sel.metric,
                                  reduce=s.reduce)
        budget = self.config.loop.label_budget
        if budget is not None:
            select_cfg = replace(select_cfg, max_new=max(0, min(
                sel.max_new, budget - self.store.count(sampler=s.type))))
        result = sample_generation(committee, training, self.sampler(g), s.kT, select_cfg,
                                   seeds=training.select(seed_index))
        cands = result.candidates
        self.generation_dir(g).mkdir(parents=True, exist_ok=True)
        _write_candidates(self.generation_dir(g) / "candidates.extxyz", cands, result.chosen)
        chosen_atoms = cands.batch.select(result.chosen).to_atoms()
        provenance = []
        for k, idx in enumerate(result.chosen.tolist()):
            chosen_atoms[k].calc = None
            provenance.append({
                "generation": g + 1, "sampler": s.type,
                "parent": int(train_ids[int(seed_index[cands.parent[idx]])]),
                "uncertainty": float(cands.uncertainty[idx]),
                "objective": float(cands.objective[idx]),
                "oracle": self.oracle.name,
            })
        log.info("generation %d: %d candidates, %d above the gate %.3g, %d chosen", g,
                 len(cands), int((cands.uncertainty > result.threshold).sum()),
                 result.threshold, len(provenance))
        if provenance:
            self.store.add_pending(chosen_atoms, provenance)
        return len(provenance)

    def label_pending(self) -> None:
        pending = self.store.pending()
        if not pending:
            return
        e = self.config.executor
        with make_executor(e.kind, e.workers, e.address) as executor:
            executor.label(self.oracle, pending,
                           lambda row_id, result: self.store.record(row_id, result, self.oracle),
                           progress=self.progress)

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        """Run (or continue) the loop until a stopping rule holds; the final state."""
        self.ensure_initial_data()
        self.label_pending()  # a run killed while labelling finishes those first
        generations = self.config.loop.generations
        reason = f"reached {generations} generations"
        for g in range(generations + 1):
            committee = self.train(g)
            metrics = self.evaluate(g, committee)
            log.info("generation %d: %s", g, {k: v for k, v in metrics.items()
                                             if isinstance(v, (int, float))})
            if g == generations:
                break
            budget = self.config.loop.label_budget
            if budget is not None and self.store.count(sampler=self.config.sampler.type) >= budget:
                reason = f"label budget of {budget} reached"
                break
            if self.sample(g, committee) == 0:
                reason = "no candidate passed the uncertainty gate"
                break
            self.label_pending()
        state = {"reason": reason, "generation": g, "labels": self.store.count(status="ok"),
                 "failed": self.store.count(status="failed")}
        (self.run_dir / "stopped.json").write_text(json.dumps(state, indent=1))
        return state


def _normal(atoms) -> np.ndarray:
    p = atoms.positions
    n = np.cross(p[2] - p[1], p[3] - p[1])
    return -n / np.linalg.norm(n)


def _write_candidates(path: Path, cands, chosen: torch.Tensor) -> None:
    atoms = cands.batch.to_atoms()
    picked = set(chosen.tolist())
    for k, a in enumerate(atoms):
        a.info.update(objective=float(cands.objective[k]),
                      uncertainty=float(cands.uncertainty[k]),
                      predicted_energy=float(cands.energy[k]), step=int(cands.step[k]),
                      parent=int(cands.parent[k]), chosen=k in picked)
    ase.io.write(path, atoms, format="extxyz")
