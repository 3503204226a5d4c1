"""A run from a configuration: builds the loop's parts (store, oracle, executor, sampler,
evaluators, initial data) from a :class:`~advsample.config.RunConfig` and a run directory.

Layout of a run directory (see ``advsample.loop`` for the per-generation files)::

    config.yaml          the configuration the run was started with (limits raised by
                         :func:`extend`, each change recorded in its first lines)
    config.original.yaml the configuration as started, when :func:`extend` changed it
    labels.db            every structure with labels and provenance (advsample.store)
    initial/             initial data made with the oracle: cache and state (initial_stage)
    evaluators/          reference data evaluators computed once (e.g. a generated path)
    generations/gen_NNN/ committee, metrics, sampling statistics, candidates
    stopped.json         why the run ended
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from functools import partial
from pathlib import Path

from advsample.attack import AttackConfig
from advsample.config import ConfigError, RunConfig, load_config, parse_config
from advsample.evaluators import (
    CoverageEvaluator,
    GridEvaluator,
    PathEvaluator,
    Scheduled,
    StabilityEvaluator,
    TestSetEvaluator,
)
from advsample.executors import make_executor
from advsample.initial_stage import initial_structure, make_initial_data
from advsample.loop import ActiveLearning, ConvergenceRule, LoopParts, LoopSettings
from advsample.oracles import make_oracle
from advsample.samplers import SAMPLERS
from advsample.screening import LabelScreen
from advsample.select import SelectConfig
from advsample.store import STORE_NAME, MemoryStore, Store, naming_store
from advsample.train import TrainConfig

log = logging.getLogger("advsample")
CONFIG_NAME = "config.yaml"


def run(target: str | Path, run_dir: str | Path | None = None, progress: bool = True,
        generations: int | None = None, label_budget: int | None = None) -> dict:
    """Run or continue a loop, then write its report: ``advsample run`` in one call.

    ``target`` is a YAML configuration (a new run in ``run_dir``, default runs/<file stem>,
    or the run already there) or a run directory (continued with its stored configuration).
    The run directory is locked (:mod:`advsample.runlock`) from before the run starts or
    resumes until its report is written: a second caller refuses with ``RunLocked`` while
    this one lives. An error of the configuration or of the store names its file; a new run
    that fails to start leaves no ``config.yaml`` (nor empty directories) behind, so the
    corrected file is taken next time. Returns the loop's final state (see
    :meth:`ActiveLearning.run`) with ``run_dir`` and ``report`` (the report's path).
    ``generations`` / ``label_budget``: raise an existing run's limits first (:func:`extend`);
    for a new run they belong in its YAML file (ConfigError otherwise).
    """
    from advsample.report import write_report
    from advsample.runlock import RunLock

    target = Path(target)
    if target.is_dir():
        if not (target / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{target} is a directory but not a run (no {CONFIG_NAME})")
        run_dir = target
    else:
        run_dir = Path(run_dir or Path("runs") / target.stem)
    created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)  # the lock lives in it
    try:
        with RunLock(run_dir), naming_store(run_dir):
            limits = generations is not None or label_budget is not None
            if limits and not (run_dir / CONFIG_NAME).exists():
                raise ConfigError(f"{target}: --generations/--label-budget raise the limits of "
                                  "an existing run; a new run takes loop.generations and "
                                  "loop.label_budget from its YAML file")
            al = _start_or_resume(target, run_dir, progress)
            if limits and extend(run_dir, generations, label_budget):
                al = resume(run_dir, progress)  # rebuilt on the raised limits
            log.info("run directory: %s", al.run_dir)
            state = al.run()
            state.update(run_dir=al.run_dir, report=write_report(al.run_dir))
    finally:
        for d in created:  # a run that never started leaves no empty directories behind
            with contextlib.suppress(OSError):
                d.rmdir()
    return state


def extend(run_dir: str | Path, generations: int | None = None,
           label_budget: int | None = None) -> dict:
    """Raise the limits of the run in ``run_dir`` so that continuing it runs on: its stored
    ``loop.generations`` and/or ``loop.label_budget`` become the values given.

    Only these two change (nothing done is redone: finished generations, labels and
    committees are kept, and the loop continues after its last generation). A limit can
    only be raised (a label budget may also be set on a run without one): a lower one is a
    ConfigError naming the file. The stored file is
    rewritten atomically with one comment line per change at its top; the text the run
    started with is kept once in ``config.original.yaml``. A run that stopped on a sampling
    rule (plateau, gate) stops there again: a warning says so. Returns {key: (old, new)}
    of what changed (empty: nothing to do). Call it while no process runs the loop
    (``advsample run --generations`` holds the run's lock).
    """
    import yaml

    run_dir = Path(run_dir)
    stored = run_dir / CONFIG_NAME
    config = load_config(stored)
    wanted = {"generations": generations, "label_budget": label_budget}
    changes = {}
    for key, new in wanted.items():
        if new is None:
            continue
        old = getattr(config.loop, key)  # label_budget None: no budget yet
        if old is not None and new < old:
            raise ConfigError(f"{stored}: loop.{key}: {new} is below the run's {old} "
                              "(a limit can only be raised)")
        if new != old:
            changes[key] = (old, new)
    if not changes:
        return {}
    data = yaml.safe_load(stored.read_text())
    loop = data.setdefault("loop", {}) or {}
    data["loop"] = loop
    for key, (_, new) in changes.items():
        loop[key] = new
    parse_config(data, str(stored))  # the new limits validated before anything is written
    original = run_dir / "config.original.yaml"
    if not original.exists():
        shutil.copyfile(stored, original)
    history = [line for line in stored.read_text().splitlines()
               if line.startswith("# extended:")]
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    history += [f"# extended: loop.{key} {old} -> {new} on {when}"
                for key, (old, new) in changes.items()]
    text = "\n".join(history) + "\n" + yaml.safe_dump(data, sort_keys=False)
    partial_file = stored.with_name(CONFIG_NAME + ".partial")
    partial_file.write_text(text)
    os.replace(partial_file, stored)
    for key, (old, new) in changes.items():
        log.info("%s: loop.%s %s -> %s", run_dir, key, old, new)
    stop = run_dir / "stopped.json"
    if stop.exists():
        reason = json.loads(stop.read_text()).get("reason", "")
        if not reason.startswith(("reached", "label budget")):  # a sampling stop rule held
            log.warning("%s stopped because %s: continuing it will stop there again unless "
                        "that rule changes", run_dir, reason)
    return changes


def _start_or_resume(target: Path, run_dir: Path, progress: bool) -> ActiveLearning:
    """The loop of a new run from the YAML ``target``, or of the run already in ``run_dir``
    (see :func:`run`: errors name the file, a failed new start leaves no config behind)."""
    from advsample.runlock import LOCK_NAME

    stored = run_dir / CONFIG_NAME
    fresh = not stored.exists()
    config = target if fresh else stored
    try:
        return resume(run_dir, progress) if target.is_dir() else start(target, run_dir, progress)
    except BaseException as exc:
        if fresh and stored.exists() and {p.name for p in run_dir.iterdir()} <= {
                CONFIG_NAME, LOCK_NAME}:
            stored.unlink()
        if isinstance(exc, (ValueError, ImportError)) and str(config) not in str(exc):
            raise ValueError(f"{config}: {exc}") from exc
        raise


def start(config_path: str | Path, run_dir: str | Path, progress: bool = True
          ) -> ActiveLearning:
    """A new run from a YAML file, or the run already in ``run_dir``.

    A run whose generation-0 committee exists continues with its own stored configuration (a
    warning says so when the file given differs). One that never got that far (e.g. it
    failed on a bad initial file) takes the file given now: the oracle results it has are
    kept when the system, oracle, initial data and seed are unchanged, and are moved aside
    to ``superseded-<time>/`` otherwise.
    """
    run_dir = Path(run_dir)
    stored = run_dir / CONFIG_NAME
    config = load_config(config_path)
    if stored.exists():
        if Path(config_path).read_text() == stored.read_text():
            return resume(run_dir, progress)
        if (run_dir / "generations" / "gen_000" / "committee.pt").exists():
            log.warning("%s already holds a run: continuing it with its own %s, not %s",
                        run_dir, CONFIG_NAME, config_path)
            return resume(run_dir, progress)
        _replace_unstarted(run_dir, load_config(stored), config)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_path, stored)
    return build(config, run_dir, progress)


def _replace_unstarted(run_dir: Path, old: RunConfig, new: RunConfig) -> None:
    """Make way for ``new`` in a run that never trained generation 0 (see :func:`start`)."""
    def origin(c: RunConfig) -> list:
        """The settings the initial data and reference data depend on."""
        return [c.system, c.oracle, c.initial, c.seed]

    if origin(old) == origin(new):
        log.warning("%s never trained generation 0: taking the new configuration and "
                    "keeping its oracle results (same system, oracle and initial data)", run_dir)
        return
    aside = run_dir / time.strftime("superseded-%Y%m%d-%H%M%S")
    aside.mkdir()
    for name in (STORE_NAME, "initial", "evaluators", CONFIG_NAME):
        if (run_dir / name).exists():
            (run_dir / name).rename(aside / name)
    log.warning("%s never trained generation 0: taking the new configuration; the earlier "
                "one's data moved to %s", run_dir, aside)


def resume(run_dir: str | Path, progress: bool = True) -> ActiveLearning:
    """The run in ``run_dir``, to be continued."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_NAME).exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CONFIG_NAME})")
    return build(load_config(run_dir / CONFIG_NAME), run_dir, progress)


def build(config: RunConfig, run_dir: str | Path | None, progress: bool = True
          ) -> ActiveLearning:
    """The loop of ``config`` in ``run_dir``; None keeps everything in memory (toys, tests)."""
    run_dir = None if run_dir is None else Path(run_dir)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    store = MemoryStore() if run_dir is None else Store(run_dir / STORE_NAME)
    oracle = make_oracle(config.oracle.spec(config.system.box))
    e = config.executor
    split = idle_parallel_switches(config)
    if split:
        log.warning("%s: executor.kind is inprocess, so this runs in one process (set "
                    "executor: {kind: processes, workers: N} to split it)", ", ".join(split))
    parts = LoopParts(
        store=store, oracle=oracle,
        make_executor=partial(make_executor, e.kind, e.workers, e.address),
        make_sampler=partial(make_sampler, config, progress=progress),
        evaluators=build_evaluators(config, oracle, run_dir, progress),
        initial_data=partial(make_initial_data, config, store, oracle, run_dir),
    )
    return ActiveLearning(loop_settings(config, progress), parts, run_dir)


def idle_parallel_switches(config: RunConfig) -> list[str]:
    """The ``parallel`` switches that are on although the executor runs everything in this
    process (they then change nothing)."""
    if config.executor.kind != "inprocess":
        return []
    switches = [("train.parallel", config.train.parallel),
                ("sampler.parallel", config.sampler.parallel)]
    switches += [(f"evaluate.{e.name or e.type}.parallel", getattr(e, "parallel", False))
                 for e in config.evaluate]
    return [name for name, on in switches if on]


def loop_settings(config: RunConfig, progress: bool = True) -> LoopSettings:
    """The loop's plain settings from a configuration."""
    t, s, sel, c = config.train, config.sampler, config.select, config.loop.convergence
    o = config.oracle
    toy = config.system.dim < 3
    hyperparameters = dict(config.committee.hyperparameters)
    if config.committee.model == "mlp":
        hyperparameters.setdefault("dim", config.system.dim)
    return LoopSettings(
        generations=config.loop.generations, label_budget=config.loop.label_budget,
        model=config.committee.model, committee_size=config.committee.size,
        hyperparameters=hyperparameters,
        train=TrainConfig(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size,
                          energy_weight=t.energy_weight, forces_weight=t.forces_weight,
                          val_fraction=t.val_fraction, patience=t.patience,
                          lr_patience=t.lr_patience, bootstrap=t.bootstrap,
                          min_epochs=t.min_epochs),
        warm_start=t.warm_start, parallel_training=t.parallel,
        parallel_sampling=s.parallel, kT=s.kT, kT_ladder=s.kT_ladder,
        seeds=s.seeds,
        seed_choice=s.seed_choice, target_error=s.target_error,
        select=SelectConfig(max_new=sel.max_new, gate_percentile=sel.gate_percentile,
                            gate_absolute=sel.gate_absolute, min_separation=sel.min_separation,
                            metric="coordinates" if toy else sel.metric, reduce=s.reduce,
                            rank=sel.rank, diversity=sel.diversity, seed=config.seed),
        convergence=ConvergenceRule(statistic=c.statistic, percentile=c.percentile,
                                    target=c.target, plateau_generations=c.plateau_generations,
                                    plateau_fraction=c.plateau_fraction),
        dim=config.system.dim, device=config.device, compile=config.committee.compile,
        seed=config.seed, progress=progress,
        screen=None if toy else LabelScreen(  # toy surfaces have no eV scale
            max_force=o.reject_forces_above, max_energy_above=o.reject_energy_above,
            warning_words=tuple(o.reject_warnings)))


def make_sampler(config: RunConfig, generation: int, progress: bool = True):
    """The configured sampler, seeded for ``generation``."""
    s, toy = config.sampler, config.system.dim < 3
    attack_cfg = AttackConfig(
        steps=s.steps, lr=s.lr, init_scale=s.init_scale, restarts=s.restarts, reduce=s.reduce,
        max_displacement=s.max_displacement, min_distance=None if toy else s.min_distance,
        energy_ceiling=s.energy_ceiling, remove_translation=not toy,
        energy_above_initial=None if toy or s.type != "attack" else s.energy_above_initial,
        displacements=s.displacements, torsion_lr=s.torsion_lr, max_torsion=s.max_torsion,
        torsion_start=s.torsion_start, min_contact=None if toy else s.min_contact,
        torsions=[list(b) for b in s.torsions] if isinstance(s.torsions, list) else s.torsions,
        box=tuple(config.system.box) if toy else None,
        seed=config.seed * 1000 + generation, progress=progress)
    cls = SAMPLERS[s.type]
    if s.type == "random":
        return cls(scale=s.random_scale, config=attack_cfg)
    if s.type in ("md", "biased_md"):
        bias = {} if s.type == "md" else {
            "bias_strength": s.bias_strength, "bias_units": s.bias_units,
            "bias_width": s.bias_width, "bias_width_units": s.bias_width_units}
        return cls(temperature_K=s.md_temperature_K, steps=s.md_steps, dt_fs=s.md_timestep_fs,
                   interval=s.md_interval, max_uncertainty=s.md_max_uncertainty,
                   max_uncertainty_units=s.md_max_uncertainty_units,
                   min_uncertainty_bound=s.md_min_uncertainty_bound,
                   config=attack_cfg, **bias)
    if s.type == "attack":
        return cls(config=attack_cfg, thermalize_fs=s.thermalize_fs,
                   thermalize_temperature_K=s.thermalize_temperature_K,
                   timestep_fs=s.md_timestep_fs)
    return cls(config=attack_cfg)


def build_evaluators(config: RunConfig, oracle, run_dir: Path | None,
                     progress: bool = True) -> list:
    """The evaluators of ``config.evaluate``, their reference data loaded or generated; those
    with ``every`` > 1 wrapped in :class:`~advsample.evaluators.Scheduled`."""
    out = []
    for spec in config.evaluate:
        evaluator = _evaluator(spec, config, oracle, run_dir, progress)
        out.append(Scheduled(evaluator, spec.every) if spec.every > 1 else evaluator)
    return out


def _evaluator(spec, config: RunConfig, oracle, run_dir: Path | None, progress: bool):
    """One evaluator of ``config.evaluate`` (``spec``), its reference data loaded or made."""
    from advsample.evaluators.path import COORDINATE_LABELS, generated_path
    from advsample.evaluators.test_set import load_test_set
    from advsample.store import read_extxyz

    name = spec.name or spec.type
    if spec.type == "test_set":
        return TestSetEvaluator(load_test_set(spec.file), name=name,
                                reduce=config.sampler.reduce, dim=config.system.dim)
    if spec.type == "stability":
        starts = None if spec.starts is None else read_extxyz(spec.starts)
        return StabilityEvaluator(
            starts, name=name, temperature_K=spec.temperature_K, runs=spec.runs,
            steps=spec.steps, timestep_fs=spec.timestep_fs, floor=spec.floor,
            bond_ceiling=spec.bond_ceiling, bond_tolerance=spec.bond_tolerance,
            seed=spec.seed, progress=progress, parallel=spec.parallel)
    if spec.type == "path":
        if spec.file is not None:
            frames = load_test_set(spec.file)
            coordinate = ([float(a.info["coordinate"]) for a in frames]
                          if all("coordinate" in a.info for a in frames) else None)
            return PathEvaluator(frames, name=name, coordinate=coordinate)
        cache = None if run_dir is None else run_dir / "evaluators" / f"{name}.extxyz"
        frames, coordinate = generated_path(spec.generator, initial_structure(config),
                                            oracle, cache, spec.points)
        return PathEvaluator(frames, name=name, coordinate=coordinate,
                             coordinate_label=COORDINATE_LABELS[spec.generator])
    if spec.type == "coverage":
        return CoverageEvaluator(spec.cvs, name=name, bins=spec.bins, ranges=spec.ranges)
    if spec.type == "conformers":
        from advsample.evaluators.conformers import ConformerEvaluator, load_grid

        return ConformerEvaluator(load_grid(spec.file), spec.phi, spec.psi, name=name,
                                  window_eV=spec.window_eV,
                                  basin_radius_deg=spec.basin_radius_deg,
                                  basin_temperature_K=spec.basin_temperature_K)
    if not hasattr(oracle, "surface"):  # spec.type == "grid"
        raise ValueError("evaluate: a grid evaluator needs an analytic oracle")
    return GridEvaluator(oracle.surface, name=name, resolution=spec.resolution,
                         low_below=spec.low_below)

