"""The active-learning loop: one resumable sequence of generations for toys, molecules, cells.

Generation g: train a committee on the labelled structures of generations 0..g -> evaluate
it with the run's evaluators -> sample candidates from the training structures -> stop if
the convergence rule holds on their uncertainty -> write the selected ones as pending rows
of generation g + 1 -> label them -> generation g + 1.

The store (labelled structures and pending rows with provenance) and, when a run directory
is given, one folder per generation are the state::

    generations/gen_NNN/committee.pt       committee trained on generations 0..NNN
    generations/gen_NNN/metrics.json       training errors + each evaluator's numbers
    generations/gen_NNN/sampling.json      candidates' σ²_F statistics, gate, chosen count, NN cost
                                           (seconds; nn_evaluations: structures the committee
                                           evaluated, Committee.evaluated)
    generations/gen_NNN/candidates.extxyz  every candidate, the chosen ones flagged
    stopped.json                           which rule ended the run, and the statistic's curve

A killed run started again continues at the first stage whose output is missing and never
repeats a finished oracle call. Without a run directory (toys, tests) the same stages keep
their outputs in memory.

The loop knows its collaborators only by what it calls on them (:class:`LoopParts`): it
imports no oracle, store, executor, CLI or plotting module; ``advsample.run`` builds them from
a configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import torch

from advsample.attack import AUTO_KT_MULTIPLE, BoltzmannPrior, Candidates
from advsample.calibration import Calibration, fresh_label_record
from advsample.committee import Committee
from advsample.samplers.parallel import ParallelSampler
from advsample.screening import LabelScreen, energy_ceilings
from advsample.select import (
    SelectConfig,
    choose_seeds,
    gate_threshold,
    select,
    training_energy,
)
from advsample.structures import Batch, concatenate
from advsample.train import TrainConfig, fit, fit_members_separately, split_indices

log = logging.getLogger("advsample")


@dataclass
class GenerationSample:
    """What one generation's sampling produced: every candidate, the gate, the picks, and the
    kT each candidate was proposed at (eV/atom; several with a kT ladder)."""

    candidates: Candidates
    threshold: float
    chosen: torch.Tensor  # long [n_chosen], indices into candidates
    kT: torch.Tensor  # float [n_candidates]


def attack_prior(committee: Committee, training: Batch, initial: Batch,
                 kT: float) -> BoltzmannPrior:
    """The Boltzmann prior at ``kT`` (eV/atom): Q over ``training``, and the energy ceiling's
    reference e_max the highest per-atom energy of ``initial``, by label or by the
    committee's prediction, whichever is higher (a committee biased upward still has room to
    move; a reference in the initial data does not rise with every high label)."""
    prior = BoltzmannPrior.from_training(training, kT)
    labelled = prior.per_atom_energy(initial.energy.to(torch.float64), initial)
    predicted = prior.per_atom_energy(training_energy(committee, initial), initial)
    return replace(prior, e_max=max(float(labelled.max()), float(predicted.max())))


def sample_generation(committee: Committee, training: Batch, sampler, kT: float,
                      select_cfg: SelectConfig, seeds: Batch | None = None,
                      initial: Batch | None = None, kT_ladder: int = 0) -> GenerationSample:
    """Propose from ``seeds`` (default: every training structure), then gate and select.

    Q of the Boltzmann prior (kT in eV/atom), the gate and de-duplication always use the whole
    labelled ``training`` set; the attack's energy ceiling is relative to ``initial``
    (default: ``training``, see :func:`attack_prior`). kT ladder: while fewer than
    ``select_cfg.max_new`` are chosen, the same seeds are proposed from again at 2, 4, ...
    x kT (at most ``kT_ladder`` times) and the rest of the budget is filled from those new
    candidates, distinct from the training set and from the picks so far. The picks of a
    colder rung are never displaced by hotter ones (log L of different kT do not compare):
    the budget is filled with the coldest distinct structures above the gate.
    """
    initial = training if initial is None else initial
    seeds = (training if seeds is None else seeds).without_labels()
    threshold = gate_threshold(committee, training, select_cfg)
    parts, chosen, rung_kT = [], [], []
    for rung in range(kT_ladder + 1):
        left = select_cfg.max_new - sum(len(c) for c in chosen)
        if rung and left <= 0:
            break
        rung_T = kT * 2.0**rung
        candidates = sampler.propose(committee, seeds, attack_prior(committee, training,
                                                                    initial, rung_T))
        taken = [parts[k].batch.select(c) for k, c in enumerate(chosen) if len(c)]
        reference = concatenate([training.without_labels(), *taken])
        picks = select(candidates, reference, threshold, replace(select_cfg, max_new=left))
        parts.append(candidates)
        chosen.append(picks)
        rung_kT.append(torch.full((len(candidates),), rung_T, dtype=torch.float64))
    shifts = np.cumsum([0] + [len(c) for c in parts[:-1]])
    chosen_all = torch.cat([c + int(shift) for c, shift in zip(chosen, shifts, strict=True)])
    return GenerationSample(Candidates.concat(parts) if len(parts) > 1 else parts[0],
                            threshold, chosen_all, torch.cat(rung_kT))


@dataclass
class ConvergenceRule:
    """When "the uncertainty can no longer be decreased", from each generation's candidates.

    statistic: summary of the candidates' σ²_F ((eV/Å)²): "max" (the best candidate) or
    "percentile" (its ``percentile``-th percentile; robust to one lucky attack).
    target: stop once the statistic falls below this value; None: no absolute target.
    plateau_generations k, plateau_fraction f: stop when, over the last k generations, the
    statistic never fell more than f below the lowest value before them; k None: no plateau.
    """

    statistic: str = "percentile"
    percentile: float = 90.0
    target: float | None = None
    plateau_generations: int | None = 3
    plateau_fraction: float = 0.1

    def value(self, uncertainty: np.ndarray) -> float:
        """The statistic of one generation's candidate σ²_F [C]; NaN without candidates."""
        if len(uncertainty) == 0:
            return float("nan")
        if self.statistic == "max":
            return float(np.max(uncertainty))
        if self.statistic == "percentile":
            return float(np.percentile(uncertainty, self.percentile))
        raise ValueError(f"convergence statistic must be 'max' or 'percentile', "
                         f"got {self.statistic!r}")

    def check(self, history: list[float]) -> str | None:
        """The reason to stop after the statistics ``history`` of generations 0..g, or None."""
        name = self.statistic if self.statistic == "max" else f"p{self.percentile:g}"
        current = history[-1]
        if self.target is not None and current < self.target:
            return (f"converged: candidate σ²_F {name} {current:.3g} below the target "
                    f"{self.target:.3g} (eV/Å)²")
        k = self.plateau_generations
        if k is not None and len(history) > k:
            before, recent = np.nanmin(history[:-k]), np.nanmin(history[-k:])
            if recent > (1 - self.plateau_fraction) * before:
                return (f"converged: candidate σ²_F {name} fell less than "
                        f"{100 * self.plateau_fraction:.0f} % in {k} generations "
                        f"({before:.3g} -> {recent:.3g} (eV/Å)²)")
        return None


@dataclass
class LoopSettings:
    """What the loop does, in plain numbers (``advsample.config`` maps a YAML file onto it).

    generations: sampling rounds after generation 0; label_budget: most oracle calls after
    the initial data (None: no limit); model, committee_size, hyperparameters: the committee;
    train: training settings (its seed is set per generation); warm_start: start generation
    g from g − 1's weights; parallel_training: the members in groups on the executor's
    workers; parallel_sampling: the seeds in chunks on them (``ParallelSampler``); kT: Boltzmann
    temperature (eV/atom, or "auto": see :meth:`ActiveLearning.kT`); kT_ladder: hotter
    attack rounds that fill a starved generation (see :func:`sample_generation`); seeds: how
    many training structures to sample from (None: all), seed_choice: which ("random",
    "uncertainty", "spread": see ``select.choose_seeds``); target_error: the attack aims at
    this calibrated force error (eV/Å) instead of the maximum (see
    :meth:`ActiveLearning.target_sigma`); select: gate, de-duplication, cap; convergence:
    the uncertainty stop; dim: coordinates per atom (3, or 1-2 for toys); device: "cpu",
    "cuda" or "auto"; compile: torch.compile the committee's training, attack, NN-MD and
    evaluation steps (``Committee.compile``); seed: of everything random; screen: which
    fresh labels are rejected (None: none).
    """

    generations: int = 5
    label_budget: int | None = None
    model: str = "painn"
    committee_size: int = 4
    hyperparameters: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    warm_start: bool = False
    parallel_training: bool = False
    parallel_sampling: bool = False
    kT: float | str = 0.05
    kT_ladder: int = 0
    seeds: int | None = None
    seed_choice: str = "random"
    target_error: float | None = None
    select: SelectConfig = field(default_factory=SelectConfig)
    convergence: ConvergenceRule = field(default_factory=ConvergenceRule)
    dim: int = 3
    device: str = "cpu"
    compile: bool = False
    seed: int = 0
    progress: bool = True
    screen: LabelScreen | None = field(default_factory=LabelScreen)


@dataclass
class LoopParts:
    """The loop's collaborators, each known only by the calls the loop makes on it.

    store: ``count(**selection)``, ``training_atoms(max_generation)`` (labelled ase.Atoms with
    info "store_id" and "generation"), ``add_pending(atoms, provenance)``, ``pending()``,
    ``record(row_id, result, oracle)`` (see ``advsample.store``).
    oracle: ``name`` and ``label(atoms)`` (see ``advsample.oracles``).
    make_executor: a context manager with ``label(oracle, items, on_result, progress)`` and
    ``map(fn, jobs)`` (see ``advsample.executors``).
    make_sampler: generation -> a sampler with ``name`` and ``propose(committee, seeds, prior)``.
    evaluators: objects with ``name`` and ``evaluate(context) -> dict`` (``advsample.evaluators``),
    and optionally ``every`` (int): run only at generations divisible by it and at a run's last
    generation (expensive evaluators such as long NN-MD tests; default every generation).
    initial_data: makes or continues generation 0 of the store (labelled rows, or pending
    rows the loop labels next); called at every start, it does nothing once complete.
    """

    store: Any
    oracle: Any
    make_executor: Callable[[], Any]
    make_sampler: Callable[[int], Any]
    evaluators: list = field(default_factory=list)
    initial_data: Callable[[], None] | None = None


@dataclass
class EvaluationContext:
    """What an evaluator sees of generation ``generation``.

    committee: trained on generations 0..generation, on ``device``, in eval mode;
    training: its labelled structures (Batch on ``device``); training_generation: long [K],
    the generation each came from; cache_dir: where an evaluator may keep reference data it
    computed once; output_dir: the generation's directory, where an evaluator may write
    files about this generation (both None without a run directory); executor: the run's
    (``workers``, ``map``) for evaluators that split their work, None when there is none.
    """

    generation: int
    committee: Committee
    training: Batch
    training_generation: np.ndarray
    device: torch.device
    cache_dir: Path | None
    output_dir: Path | None = None
    executor: Any = None


def resolve_device(name: str) -> torch.device:
    """"cpu", "cuda" (fails clearly without a GPU) or "auto" (cuda when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name)


class ActiveLearning:
    """One active-learning run; ``run_dir`` None keeps every stage's output in memory."""

    def __init__(self, settings: LoopSettings, parts: LoopParts,
                 run_dir: str | Path | None = None):
        self.settings = settings
        self.parts = parts
        self.store = parts.store
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.device = resolve_device(settings.device)
        self._memory: dict[tuple[str, int], Any] = {}
        self._initial_spread: float | None = None
        self._auto_kT: float | None = None
        self._executor = None  # the run's executor while run() runs

    @contextlib.contextmanager
    def workers(self):
        """The executor for labels and parallel NN work: the one :meth:`run` keeps open over
        all generations (a process pool starts once per run, not per stage), or a fresh one
        for a single stage called on its own."""
        if self._executor is not None:
            yield self._executor
            return
        with self.parts.make_executor() as executor:
            yield executor

    # ------------------------------------------------------------------ files
    def generation_dir(self, g: int) -> Path:
        """Folder of generation ``g`` (run directory only)."""
        return self.run_dir / "generations" / f"gen_{g:03d}"

    def checkpoint(self, g: int) -> Path:
        """Committee checkpoint of generation ``g`` (run directory only)."""
        return self.generation_dir(g) / "committee.pt"

    def _load(self, kind: str, g: int) -> Any:
        if self.run_dir is None:
            return self._memory.get((kind, g))
        path = self.generation_dir(g) / f"{kind}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def _save(self, kind: str, g: int, value: dict) -> None:
        if self.run_dir is None:
            self._memory[(kind, g)] = value
            return
        self.generation_dir(g).mkdir(parents=True, exist_ok=True)
        path = self.generation_dir(g) / f"{kind}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(value, indent=1))
        tmp.replace(path)

    # ------------------------------------------------------------------ data
    def training_set(self, g: int) -> tuple[Batch, list[int], np.ndarray]:
        """Labelled structures of generations 0..g (on the loop's device), their store row
        ids and their generations [K]."""
        atoms = self.store.training_atoms(max_generation=g)
        if not atoms:
            raise ValueError("no labelled structures to train on (did every label fail?)")
        batch = Batch.from_atoms(atoms, dim=self.settings.dim).to(device=self.device)
        return (batch, [a.info["store_id"] for a in atoms],
                np.array([a.info["generation"] for a in atoms]))

    def validation_split(self, generations: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation) indices into a training set whose structures came from
        ``generations`` [K] (in store order). Each generation's structures are split on
        arrival with a seed of their own, so a structure keeps its side of the split in every
        later generation and warm-started weights are never validated on their own training
        data."""
        fraction, train, val = self.settings.train.val_fraction, [], []
        for h in np.unique(generations):
            members = torch.as_tensor(np.flatnonzero(generations == h))
            t, v = split_indices(len(members), fraction, self.settings.seed * 1000 + int(h))
            train.append(members[t])
            val.append(members[v])
        return torch.cat(train), torch.cat(val)

    # ---------------------------------------------------------------- stages
    def train(self, g: int) -> Committee:
        """The committee of generation ``g``: loaded if trained before, else trained."""
        committee = self._train(g)
        committee.compile = self.settings.compile
        return committee

    def _train(self, g: int) -> Committee:
        s = self.settings
        if self.run_dir is None and ("committee", g) in self._memory:
            return self._memory[("committee", g)]
        if self.run_dir is not None and self.checkpoint(g).exists():
            return Committee.load(self.checkpoint(g)).to(self.device)
        data, _, generations = self.training_set(g)
        previous = self._previous_committee(g) if s.warm_start else None
        committee = previous or Committee.build(s.model, s.committee_size, seed=s.seed * 100 + g,
                                                **s.hyperparameters)
        committee.to(self.device)
        committee.compile = s.compile  # training steps compiled too
        cfg = replace(s.train, seed=s.seed * 100 + g, progress=s.progress)
        split = self.validation_split(generations)
        start = time.perf_counter()
        if s.parallel_training:
            with self.workers() as executor:
                result = fit_members_separately(committee, data, cfg, executor,
                                                previous is not None, split=split)
        else:
            result = fit(committee, data, cfg, warm_start=previous is not None, split=split)
        committee.eval()
        self._save("train", g, {**result.as_dict(), "n_train": data.n_structures,
                                "warm_start": previous is not None,
                                "train_seconds": time.perf_counter() - start})
        if self.run_dir is None:
            self._memory[("committee", g)] = committee
        else:
            committee.save(self.checkpoint(g))
        return committee

    def _previous_committee(self, g: int) -> Committee | None:
        if g == 0:
            return None
        if self.run_dir is None:
            previous = self._memory.get(("committee", g - 1))
            if previous is None:
                return None
            return Committee.from_state(previous.state())
        path = self.checkpoint(g - 1)
        return Committee.load(path) if path.exists() else None

    def evaluate(self, g: int, committee: Committee, last: bool = False) -> dict:
        """metrics of generation ``g``: training errors, label counts, each evaluator's numbers.

        An evaluator with ``every`` = k runs when k divides ``g`` or ``g`` is the run's
        ``last`` generation. Evaluators missing from a stored metrics.json (killed mid-way,
        added to the config since, or due now that ``g`` turned out last) are run now;
        finished ones are never repeated.
        """
        metrics = self._load("metrics", g)
        if metrics is None:
            metrics = {"generation": g, **self._load("train", g), **self._label_counts(g)}
            self._save("metrics", g, metrics)
        missing = [e for e in self.parts.evaluators if e.name not in metrics
                   and (last or g % getattr(e, "every", 1) == 0)]
        if missing:
            data, _, generations = self.training_set(g)
            cache = None if self.run_dir is None else self.run_dir / "evaluators"
            output = None if self.run_dir is None else self.generation_dir(g)
            with self.workers() as executor:
                context = EvaluationContext(g, committee, data, generations, self.device,
                                            cache, output, executor)
                for evaluator in missing:
                    log.info("generation %d: evaluating %s", g, evaluator.name)
                    start = time.perf_counter()
                    metrics[evaluator.name] = {**evaluator.evaluate(context),
                                               "seconds": time.perf_counter() - start}
                    self._save("metrics", g, metrics)
        return metrics

    def _label_counts(self, g: int) -> dict:
        """labels: ok structures of generations 0..g; labels_added: those after generation 0;
        new_labels / failed_labels / rejected_labels: generation g's ok / failed / rejected
        oracle calls; oracle_seconds: their wall time (s)."""
        count = self.store.count
        labels = sum(count(generation=h, status="ok") for h in range(g + 1))
        seconds = sum(r.get("seconds") or 0.0 for r in self.store.rows(generation=g))
        return {"labels": labels, "labels_added": labels - count(generation=0, status="ok"),
                "oracle_seconds": seconds,
                "new_labels": count(generation=g, status="ok") if g else 0,
                "failed_labels": count(generation=g, status="failed"),
                "rejected_labels": count(generation=g, status="rejected")}

    def sample(self, g: int, committee: Committee) -> tuple[int, str | None]:
        """Sample from generation ``g``'s committee, check convergence, and write the chosen
        candidates as pending rows of generation g + 1. (rows written, stop reason or None).

        Done before (rows of g + 1 exist): nothing is sampled again.
        """
        existing = self.store.count(generation=g + 1)
        if existing:
            return existing, None
        s = self.settings
        training, ids, _ = self.training_set(g)
        seed_index = choose_seeds(committee, training, s.seeds, s.seed_choice,
                                  seed=s.seed * 1000 + g, metric=s.select.metric,
                                  reduce=s.select.reduce)
        select_cfg = replace(s.select, seed=s.select.seed * 1000 + g)
        if s.label_budget is not None:
            select_cfg = replace(select_cfg, max_new=max(0, min(
                select_cfg.max_new, s.label_budget - self.sampled_labels())))
        sampler = self.parts.make_sampler(g)
        if s.target_error is not None and getattr(sampler, "name", "") == "attack":
            sampler.config = replace(sampler.config, target_sigma=self.target_sigma(g))
        if getattr(sampler, "config", None) is not None \
                and sampler.config.energy_above_initial == "auto":
            sampler.config = replace(sampler.config, energy_above_initial=self.initial_spread())
        start, evaluated = time.perf_counter(), committee.evaluated
        ladder = s.kT_ladder if getattr(sampler, "name", "") == "attack" else 0
        with self.workers() as executor:
            proposer = ParallelSampler(sampler, executor) if s.parallel_sampling else sampler
            result = sample_generation(committee, training, proposer, self.kT(), select_cfg,
                                       seeds=training.select(seed_index),
                                       initial=self.training_set(0)[0], kT_ladder=ladder)
        cands = result.candidates
        uncertainty = cands.uncertainty.detach().cpu().numpy()
        stats = {"generation": g, "sampler": sampler.name, "candidates": len(cands),
                 "feasible": int(cands.feasible.sum()), "threshold": result.threshold,
                 "above_gate": int((uncertainty > result.threshold).sum()),
                 "chosen": len(result.chosen),
                 "chosen_kT": sorted({float(result.kT[i]) for i in result.chosen.tolist()}),
                 "uncertainty_max": float(uncertainty.max()) if len(cands) else float("nan"),
                 # at the run's kT only: hotter ladder rounds must not hide convergence
                 "uncertainty_statistic": s.convergence.value(
                     uncertainty[(result.kT == result.kT.min()).cpu().numpy()]),
                 "seconds": time.perf_counter() - start,
                 "nn_evaluations": committee.evaluated - evaluated}
        self._save("sampling", g, stats)
        if self.run_dir is not None:
            _write_candidates(self.generation_dir(g) / "candidates.extxyz", cands, result.chosen)
        log.info("generation %d: %d candidates, %d above the gate %.3g, %d chosen, σ²_F "
                 "statistic %.3g", g, len(cands), stats["above_gate"], result.threshold,
                 stats["chosen"], stats["uncertainty_statistic"])
        reason = s.convergence.check(self.uncertainty_history(g))
        if reason is not None:
            return 0, reason
        chosen = cands.batch.select(result.chosen).to_atoms()
        provenance = []
        for k, idx in enumerate(result.chosen.tolist()):
            chosen[k].calc = None
            parent = int(cands.parent[idx])
            provenance.append({
                "generation": g + 1, "sampler": sampler.name,
                "parent": int(ids[int(seed_index[parent])]) if parent >= 0 else -1,
                "uncertainty": float(cands.uncertainty[idx]),
                "objective": float(cands.objective[idx]),
                "kT": float(result.kT[idx]),
                "oracle": self.parts.oracle.name,
            })
        if provenance:
            self.store.add_pending(chosen, provenance)
        if provenance:
            return len(provenance), None
        if stats["above_gate"] == 0:
            return 0, "no candidate passed the uncertainty gate"
        return 0, ("every candidate above the uncertainty gate duplicated a training structure "
                   "or another pick (select.min_separation)")

    def target_sigma(self, g: int) -> float:
        """σ_F (eV/Å) at which generation g's attack stops a seed: ``target_error`` over the
        calibrated scale of committee g − 1 (the latest calibration when committee g attacks;
        scale 1, i.e. raw σ, for generation 0), logged."""
        stored = self._load("calibration", g - 1) if g > 0 else None
        scale = 1.0 if stored is None else float(stored["scale"] or 1.0)
        log.info("generation %d: attack target σ_F %.4g eV/Å (error %.4g eV/Å / scale %.3g%s)",
                 g, self.settings.target_error / scale, self.settings.target_error, scale,
                 "" if stored else ", uncalibrated")
        return self.settings.target_error / scale

    def kT(self) -> float:
        """The Boltzmann temperature of the objective (eV/atom): the setting, or with "auto"
        ``BoltzmannPrior.auto_kT`` of the initial data. Fixed for the run (logged once)."""
        if self.settings.kT != "auto":
            return float(self.settings.kT)
        if self._auto_kT is None:
            self._auto_kT = BoltzmannPrior.auto_kT(self.training_set(0)[0])
            log.info("kT auto: %.4g eV/atom (%g k_B T / atoms, T from the initial energies' "
                     "fluctuation)", self._auto_kT, AUTO_KT_MULTIPLE)
        return self._auto_kT

    def initial_spread(self) -> float:
        """``BoltzmannPrior.energy_spread`` of the initial data (eV/atom): the attack's
        ``energy_above_initial`` "auto". Computed once, logged once."""
        if self._initial_spread is None:
            self._initial_spread = BoltzmannPrior.energy_spread(self.training_set(0)[0])
            log.info("energy_above_initial auto: %.4g eV/atom (the spread of the initial "
                     "per-atom energies)", self._initial_spread)
        return self._initial_spread

    def uncertainty_history(self, g: int) -> list[float]:
        """The convergence statistic of generations 0..g (NaN where not sampled)."""
        out = []
        for h in range(g + 1):
            stats = self._load("sampling", h)
            out.append(float("nan") if stats is None else stats["uncertainty_statistic"])
        return out

    def sampled_labels(self) -> int:
        """Oracle calls spent after the initial data (ok, failed and pending rows)."""
        return self.store.count() - self.store.count(generation=0)

    def label_pending(self) -> None:
        """Label every pending row; each result is committed as it arrives."""
        pending = self.store.pending()
        if not pending:
            return
        oracle, screen = self.parts.oracle, self.settings.screen
        structures = dict(pending)
        ceilings = energy_ceilings(self.store.training_atoms()) if screen else {}

        def record(row_id: int, result) -> None:
            """Commit one label, screened (advsample.screening)."""
            if screen is not None:
                result = screen(result, structures[row_id], ceilings)
            self.store.record(row_id, result, oracle)

        with self.workers() as executor:
            executor.label(oracle, pending, record, progress=self.settings.progress)

    # ------------------------------------------------------------------- run
    def start(self) -> Committee:
        """Everything before the first sampling, which no sampler or selection setting
        changes: the initial data made or continued, pending labels finished, generation 0
        trained and evaluated (each step skipped when done); its committee. Runs that differ
        only in how they sample can share its files (see benchmarks/loops.py)."""
        if self.parts.initial_data is not None:
            self.parts.initial_data()  # made, continued, or nothing to do
        if self.store.count(generation=0) == 0:
            raise ValueError("the store holds no initial data and none can be made")
        self.label_pending()  # a run killed while labelling finishes those first
        committee = self.train(0)
        self.evaluate(0, committee)
        return committee

    def run(self) -> dict:
        """Run (or continue) the generations until a stopping rule holds; the final state.
        One executor serves every stage of the run (see :meth:`workers`)."""
        with self.parts.make_executor() as executor:
            self._executor = executor
            try:
                return self._run()
            finally:
                self._executor = None

    def _run(self) -> dict:
        s = self.settings
        committee = self.start()
        reason = f"reached {s.generations} generations"
        for g in range(s.generations + 1):
            if g:
                committee = self.train(g)
            metrics = self.evaluate(g, committee, last=g == s.generations)
            log.info("generation %d: %s", g, _scalars(metrics))
            if g == s.generations:
                break
            if s.label_budget is not None and self.sampled_labels() >= s.label_budget:
                reason = f"label budget of {s.label_budget} reached"
                self.evaluate(g, committee, last=True)
                break
            _, stop = self.sample(g, committee)
            if stop is not None:
                reason = stop
                self.evaluate(g, committee, last=True)
                break
            self.label_pending()
            self.calibrate(g)
        self._carry_calibration(g)
        state = {"reason": reason, "generation": g,
                 "labels": sum(self.store.count(generation=h, status="ok") for h in range(g + 1)),
                 "failed": sum(self.store.count(generation=h, status="failed")
                               for h in range(g + 1)),
                 "rejected": sum(self.store.count(generation=h, status="rejected")
                                 for h in range(g + 1)),
                 "uncertainty_statistic": self.uncertainty_history(g),
                 "convergence": asdict(s.convergence)}
        if self.run_dir is not None:
            (self.run_dir / "stopped.json").write_text(json.dumps(state, indent=1))
        return state

    def history(self) -> list[dict]:
        """metrics of every evaluated generation with its sampling statistics under
        "sampling" (absent for the last generation, which is not sampled)."""
        out, g = [], 0
        while (metrics := self._load("metrics", g)) is not None:
            sampling = self._load("sampling", g)
            out.append({**metrics, **({"sampling": sampling} if sampling else {})})
            g += 1
        return out

    def calibrate(self, g: int) -> None:
        """Committee g's calibration (``advsample.calibration``) from the labels it proposed
        (generation g + 1's ok rows, structures it never trained on), with the calibration of
        committee g − 1 checked on them out of sample: gen_g/calibration.json beside the
        checkpoint, and "calibration" in generation g's metrics. Done once; nothing without
        at least two fresh labels."""
        metrics = self._load("metrics", g)
        if metrics is None or "calibration" in metrics:
            return
        fresh = [a for a in self.store.training_atoms(g + 1) if a.info["generation"] == g + 1]
        committee = self.committee(g)
        if len(fresh) < 2 or committee is None:
            return
        batch = Batch.from_atoms(fresh, dim=self.settings.dim).to(device=self.device)
        forces = committee.to(self.device)(batch.without_labels()).forces.detach().cpu()
        stored = self._load("calibration", g - 1) if g > 0 else None
        calibration, record = fresh_label_record(
            forces.numpy(), batch.forces.cpu().numpy(),
            previous=None if stored is None else Calibration.from_dict(stored),
            meta={"committee_generation": g, "labels_generation": g + 1})
        self._save("calibration", g, calibration.as_dict())
        self._save("metrics", g, {**metrics, "calibration": record})
        log.info("generation %d: calibration on %d fresh atoms: scale %.3g, ρ(σ, error) %.2f%s",
                 g, record["n"], record["scale"], record["spearman"],
                 f", last bound covers {record['transfer_coverage']:.0%}"
                 if "transfer_coverage" in record else "")

    def _carry_calibration(self, g: int) -> None:
        """The last committee has no fresh labels: give it its predecessor's calibration
        (marked as carried over) so ``advsample check`` and the calculator find one."""
        if self._load("calibration", g) is None and (last := self._load("calibration", g - 1)):
            self._save("calibration", g, {**last, "meta": {**last.get("meta", {}),
                                                           "carried_over_to": g}})

    def committee(self, g: int) -> Committee | None:
        """Generation ``g``'s committee if it was trained."""
        if self.run_dir is None:
            return self._memory.get(("committee", g))
        return Committee.load(self.checkpoint(g)) if self.checkpoint(g).exists() else None


def _scalars(metrics: dict) -> dict:
    """The top-level numbers of a metrics dict and each evaluator's, for one log line."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            out[key] = round(value, 5) if isinstance(value, float) else value
        elif isinstance(value, dict):
            out.update({f"{key}.{k}": round(v, 5) for k, v in value.items()
                        if isinstance(v, float)})
    return out


def _write_candidates(path: Path, cands: Candidates, chosen: torch.Tensor) -> None:
    """Every candidate as extxyz with its scores and whether it was chosen."""
    atoms = cands.batch.to_atoms()
    picked = set(chosen.tolist())
    for k, a in enumerate(atoms):
        a.info.update(objective=float(cands.objective[k]),
                      uncertainty=float(cands.uncertainty[k]),
                      predicted_energy=float(cands.energy[k]), step=int(cands.step[k]),
                      parent=int(cands.parent[k]), chosen=k in picked)
    ase.io.write(path, atoms, format="extxyz")
