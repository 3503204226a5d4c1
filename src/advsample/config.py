"""The run configuration: typed, validated, loaded from YAML.

Unknown keys and wrong types are errors that name the file and the key, e.g.
``examples/x.yaml: sampler.steps: Input should be a valid integer``. Every field carries a
one-line description (with its unit); ``advsample.config_docs`` turns them into
docs/config.md and the commented example that ``advsample config --example`` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message is one line."""


class Strict(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def _field(default, description: str, **kwargs):
    return Field(default, description=description, **kwargs)


class SystemConfig(Strict):
    """The system: an ASE molecule name or a structure file; or, for toys, a point in a box."""

    molecule: str | None = _field(None, "ASE molecule name of the starting structure, e.g. "
                                  "NH3, CH4, H2O2")
    file: str | None = _field(None, "structure file of the starting structure (any format ASE "
                              "reads; path relative to where advsample runs)")
    dim: Literal[1, 2, 3] = _field(3, "coordinates per atom: 3 for atoms, 1 or 2 for a toy "
                                   "point on an analytic surface")
    box: tuple[float, float] | None = _field(None, "toys: bounds (lo, hi) of every coordinate "
                                             "(toy length units)")

    @model_validator(mode="after")
    def _one_source(self):
        if self.dim == 3 and (self.molecule is None) == (self.file is None):
            raise ValueError("give exactly one of 'molecule' or 'file'")
        if self.dim < 3 and self.box is None:
            raise ValueError("a toy system (dim 1 or 2) needs a 'box'")
        return self


class InitialConfig(Strict):
    """Initial labelled data: an extxyz file, or made with the oracle."""

    file: str | None = _field(None, "extxyz of labelled structures (energy eV, forces eV/Å); "
                              "when given, nothing is generated")
    method: Literal["md", "normal_modes", "uniform_box"] = _field(
        "md", "how to generate initial data: oracle Langevin MD, normal-mode displacements, or "
        "(toys) uniform points in the box")
    temperature_K: float = _field(300.0, "temperature of the oracle MD or normal-mode "
                                  "sampling (K)", gt=0)
    frames: int = _field(40, "structures to generate (uniform_box: points drawn before the "
                         "energy cut)", ge=2)
    interval: int = _field(10, "oracle-MD steps between kept frames", ge=1)
    timestep_fs: float = _field(0.5, "oracle-MD time step (fs)", gt=0)
    optimize_first: bool = _field(True, "relax the starting structure with the oracle first")
    energy_max: float | None = _field(None, "uniform_box: keep only points whose oracle "
                                      "energy is below this (eV)")


class OracleConfig(Strict):
    """Ground truth: xtb (tblite), pyscf, emt, an analytic toy surface, or any ASE calculator."""

    type: Literal["xtb", "pyscf", "emt", "ase", "analytic"] = _field(
        "xtb", "which oracle labels structures")
    method: Literal["GFN2-xTB", "GFN1-xTB"] | None = _field(
        None, "xtb: the tight-binding method (null: GFN2-xTB)")
    preset: str | None = _field(None, "pyscf: a named level of theory, e.g. "
                                "bp86-d3bj/def2-svp")
    xc: str | None = _field(None, "pyscf: exchange-correlation functional")
    basis: str | None = _field(None, "pyscf: basis set")
    charge: int = _field(0, "total charge (e)")
    spin: int = _field(0, "unpaired electrons")
    calculator: str | None = _field(None, "ase: import path 'package.module:Class' of an ASE "
                                    "calculator")
    kwargs: dict = Field(default_factory=dict, description="ase: keyword arguments of the "
                         "calculator")
    surface: Literal["double_well_2d", "double_well_1d"] = _field(
        "double_well_2d", "analytic: which surface (toy energy units)")
    timeout_s: float | None = _field(None, "longest wall time of one label (s); a call that "
                                     "takes longer is stopped and recorded as failed (null: "
                                     "no limit; with a limit each call runs in a child "
                                     "process)", gt=0)
    reject_forces_above: float | None = _field(
        100.0, "a label with any atom's force above this (eV/Å) is stored as rejected and "
        "never trained on (null: no limit; the reject_ keys do not apply to toy surfaces)",
        gt=0)
    reject_energy_above: float | None = _field(
        2.0, "a label more than this above the highest training energy per atom of the same "
        "formula (eV/atom) is rejected (null: no limit)", gt=0)
    reject_warnings: list[str] = Field(
        default_factory=lambda: ["converge"], description="a label is rejected when the "
        "oracle emitted a warning containing one of these words (case-insensitive)")

    def spec(self, box: tuple[float, float] | None = None) -> dict:
        """The dict ``advsample.oracles.make_oracle`` takes (``box``: a toy system's box)."""
        spec = {"type": self.type}
        if self.type == "xtb":
            spec.update(method=self.method or "GFN2-xTB", charge=self.charge, uhf=self.spin)
        elif self.type == "pyscf":
            spec.update({k: v for k, v in (("preset", self.preset), ("xc", self.xc),
                                           ("basis", self.basis)) if v is not None})
            spec.update(charge=self.charge, spin=self.spin)
        elif self.type == "ase":
            if not self.calculator:
                raise ConfigError("oracle.calculator: needed when oracle.type is 'ase'")
            spec.update(calculator=self.calculator, kwargs=self.kwargs)
        elif self.type == "analytic":
            spec.update(surface=self.surface, box=box)
        if self.timeout_s is not None:
            spec["timeout_s"] = self.timeout_s
        return spec


MODEL_DEFAULTS = {"painn": {"features": 32, "interactions": 2, "cutoff": 4.0}}
"""Hyperparameters used when a config gives none (other models: their constructor's)."""


class CommitteeConfig(Strict):
    """The committee of NN potentials."""

    model: Literal["painn", "mace", "mlp"] = _field("painn", "architecture of every member "
                                                    "(mlp for toys; mace needs the extra)")
    size: int = _field(4, "number of members M", ge=2)
    hyperparameters: dict | None = _field(
        None, "keyword arguments of the model (PaiNN: features, interactions, cutoff Å, n_rbf; "
        "MLP: dim, width, depth; MACE: see models/mace.py); null: the model's defaults here, "
        "PaiNN {features: 32, interactions: 2, cutoff: 4.0}")

    compile: bool = _field(False, "torch.compile the committee's training, attack, NN-MD and "
                           "evaluation steps (PaiNN, MLP; derivatives inside the compiled "
                           "graph): 2-3x faster steps on a CPU after 1-3 minutes of "
                           "compiling per process (cached on disk for later runs)")

    @model_validator(mode="after")
    def _model_defaults(self):
        if self.hyperparameters is None:
            self.hyperparameters = dict(MODEL_DEFAULTS.get(self.model, {}))
        return self


class TrainSettings(Strict):
    """How each generation's committee is fitted."""

    epochs: int = _field(400, "most passes over the training data", ge=1)
    lr: float = _field(3e-3, "Adam learning rate", gt=0)
    batch_size: int | None = _field(32, "structures per step (null: all at once)", ge=1)
    energy_weight: float = _field(1.0, "weight of the per-atom energy term of the loss", ge=0)
    forces_weight: float = _field(10.0, "weight of the force term of the loss", ge=0)
    val_fraction: float = _field(0.1, "fraction of each generation's structures held out "
                                 "for validation (fixed once a structure arrives)", ge=0, lt=1)
    patience: int = _field(60, "epochs without validation improvement before a member stops",
                           ge=1)
    min_epochs: int = _field(100, "epochs every member trains from scratch, and the earliest "
                             "whose weights it may keep (a validation split whose loss is "
                             "lowest in the first epochs, e.g. one new structure unlike any "
                             "training one, would otherwise leave members nearly untrained)",
                             ge=0)
    lr_patience: int = _field(20, "epochs without improvement before the learning rate "
                              "halves", ge=1)
    bootstrap: bool = _field(True, "each member trains on its own bootstrap resample of the "
                             "training split (members differ by data, not only by weights)")
    warm_start: bool = _field(False, "start generation g from generation g-1's weights")
    parallel: bool = _field(False, "train the members in groups, one group per executor "
                            "worker, at the same time (the weights one process gives, to "
                            "round-off)")


class SamplerConfig(Strict):
    """How candidates are proposed: the attack, or a baseline (random displacements, NN-MD,
    uniform points in a toy's box)."""

    type: Literal["attack", "random", "md", "biased_md", "uniform"] = _field(
        "attack", "sampler: attack (the method), random displacements, md (NN-MD active "
        "learning), biased_md (NN-MD on the committee mean minus an uncertainty bias, "
        "UDD-AL), uniform (toys: uniform points in the box)")
    kT: float | Literal["auto"] = _field(
        0.05, "Boltzmann temperature of the objective (eV/atom), or auto: 4 k_B T / atoms with "
        "T the temperature the initial energies' fluctuation implies (harmonic: std of the "
        "energy = sqrt(modes / 2) k_B T), fixed for the run and logged")
    kT_ladder: int = _field(
        0, "attack: when a generation picks fewer than select.max_new distinct structures "
        "above the gate, attack the same seeds again at 2, 4, ... x kT, at most this many "
        "times, and fill the rest of the budget from those (colder picks are kept first)",
        ge=0)
    steps: int = _field(200, "attack: Adam steps on the displacement", ge=1)
    lr: float = _field(0.01, "attack: Adam learning rate (Å)", gt=0)
    init_scale: float = _field(0.01, "attack: std of the initial displacement (Å)", ge=0)
    restarts: int = _field(4, "attacks (or random draws, MD runs) per seed", ge=1)
    seeds: int | None = _field(None, "training structures used as seeds (null: all)", ge=1)
    seed_choice: Literal["random", "uncertainty", "spread"] = _field(
        "random", "which seeds when fewer than the training set: a random subset, the most "
        "uncertain, or spread over the training set (farthest-point sampling)")
    reduce: Literal["mean", "max", "sum"] = _field("mean", "reduction of the per-atom force "
                                                   "variance to σ²_F of a structure")
    max_displacement: float | None = _field(0.6, "largest displacement of any atom from its "
                                            "seed (Å; null: none)", gt=0)
    min_distance: float | None = _field(0.7, "closest allowed interatomic distance (Å; null: "
                                        "no limit)", gt=0)
    energy_ceiling: float | None = _field(None, "largest allowed energy above the lowest "
                                          "training energy (eV/atom)", gt=0)
    target_error: float | None = _field(
        None, "attack: aim at structures whose calibrated expected force error (RMS, eV/Å) "
        "reaches this instead of maximising the uncertainty; a seed stops at the first step "
        "that reaches it (the scale comes from the previous committee's calibration; raw σ "
        "in generation 0; null: maximise)", gt=0)
    energy_above_initial: Annotated[float, Field(gt=0)] | Literal["auto"] | None = _field(
        "auto", "attack: no kept step predicted more than this above the highest energy of "
        "the initial data (eV/atom, by label or by the committee's prediction, whichever is "
        "higher; fixed for the run, so high labels do not raise it); 'auto': the spread "
        "(max - min) of the initial per-atom energies; null: "
        "no limit; not applied to toys")
    displacements: bool = _field(True, "attack: optimise Cartesian displacements (false with "
                                 "torsions: a pure torsion attack)")
    torsions: list[tuple[int, int]] | Literal["rotatable"] | None = _field(
        None, "attack: also optimise torsion angles about these bonds ([j, k] atom index "
        "pairs of every seed), or 'rotatable': every rotatable bond found from connectivity "
        "(non-ring single bonds between non-terminal heavy atoms, amide C-N excluded)")
    torsion_lr: float = _field(0.05, "attack: Adam learning rate of the torsion angles (rad)",
                               gt=0)
    max_torsion: float | None = _field(None, "attack: largest torsion change from the seed "
                                       "(rad; null: free)", gt=0)
    min_contact: float | None = _field(
        None, "attack: no kept step with two atoms of a molecule that are neither bonded nor "
        "bonded to a common atom in the seed closer than this x the sum of their covalent "
        "radii (steric clashes, e.g. 1.5; null: not checked)", gt=0)
    torsion_start: Literal["seed", "random"] = _field(
        "seed", "attack with torsions: every restart starts at the seed's torsions, or "
        "(random) restarts after the first start from torsions drawn uniformly in [-pi, pi)")
    thermalize_fs: float = _field(
        0.0, "attack: after the attack, run each attacked structure this long (fs) in "
        "Langevin NN-MD on the committee mean at thermalize_temperature_K (time step "
        "md_timestep_fs), then re-score it: the attack ends near a mode of the Boltzmann-"
        "weighted uncertainty, with bonds near their relaxed lengths; thermal structures "
        "have ~k_B T/2 per vibration on top (0: off)", ge=0)
    thermalize_temperature_K: float = _field(300.0, "attack: temperature of the "
                                             "thermalisation (K; the application's)", gt=0)
    random_scale: float = _field(0.1, "random: std of the Gaussian displacement (Å)", gt=0)
    md_temperature_K: float = _field(600.0, "md: NN-MD temperature (K)", gt=0)
    md_steps: int = _field(2000, "md: steps per trajectory", ge=1)
    md_timestep_fs: float = _field(0.5, "md: time step (fs)", gt=0)
    md_interval: int = _field(20, "md: steps between candidate frames", ge=1)
    md_max_uncertainty: float | None = _field(
        10.0, "md, biased_md: a trajectory ends once σ²_F exceeds this trust bound, in "
        "md_max_uncertainty_units (null: no bound); the default, 10 x the seeds' mean σ²_F "
        "(σ_F ~3x the committee's on its training data, DP-GEN's usual ratio of its upper to "
        "lower trust level), keeps ~90 % of 300 K NN-MD frames of generation 0 on NH3 and on "
        "alanine dipeptide and cuts the runaways", gt=0)
    md_max_uncertainty_units: Literal["absolute", "seeds"] = _field(
        "seeds", "md, biased_md: the trust bound in (eV/Å)² (absolute) or times the "
        "committee's mean σ²_F on the seeds (seeds)")
    md_min_uncertainty_bound: float = _field(
        0.01, "md, biased_md: with units seeds, the trust bound is never below this "
        "((eV/Å)², σ_F 0.1 eV/Å): a committee that agrees almost exactly on its training data "
        "(no bootstrap, NH3 DFT frames: 10 x its seeds' σ²_F = 2.4e-4) would stop 300 K "
        "trajectories a few frames from their seeds; above the floor on NH3-xTB and alanine "
        "(0.024-0.16)", ge=0)
    bias_strength: float = _field(5.0, "biased_md: depth A of the uncertainty bias, in "
                                  "bias_units (0: plain MD)", ge=0)
    bias_units: Literal["kT", "kT/atom", "eV/atom", "eV"] = _field(
        "kT", "biased_md: A = strength x k_B T of the MD temperature (kT; the whole "
        "structure's bias), x atoms x k_B T (kT/atom), x atoms (eV/atom), or A = strength (eV)")
    bias_width: float = _field(2.0, "biased_md: spread B of the committee energies at which "
                               "the bias switches on, in bias_width_units", gt=0)
    bias_width_units: Literal["seeds", "eV"] = _field(
        "seeds", "biased_md: B relative to the committee's energy spread on the seeds (the "
        "pull is largest at width^2 / 2 times their per-atom energy variance), or in eV")
    parallel: bool = _field(
        False, "split the seeds over the executor's workers, one chunk each, sampled at the "
        "same time (attack, random; md with md_max_uncertainty null or in absolute units); "
        "chunk c draws its random numbers from the seed + c x 7919, so results depend on "
        "the number of workers")

    @model_validator(mode="after")
    def _splittable(self):
        if self.parallel and not (self.type in ("attack", "random") or (
                self.type == "md" and (self.md_max_uncertainty is None
                                       or self.md_max_uncertainty_units == "absolute"))):
            raise ValueError(f"parallel: sampler {self.type} cannot split its seeds over "
                             "workers (attack, random, or md with md_max_uncertainty null "
                             "or in absolute units)")
        return self


class SelectSettings(Strict):
    """Which candidates are labelled."""

    max_new: int = _field(20, "most labels per generation", ge=1)
    gate_percentile: float | None = _field(80.0, "uncertainty gate: a candidate's σ²_F must "
                                           "exceed this percentile of the training set's "
                                           "(null, and no gate_absolute: no gate)",
                                           ge=0, le=100)
    gate_absolute: float | None = _field(None, "uncertainty gate as an absolute σ²_F "
                                         "((eV/Å)²; overrides the percentile)", ge=0)
    min_separation: float = _field(0.03, "smallest distance of a pick to training data and "
                                   "other picks (Å in the chosen metric, or toy units)", ge=0)
    metric: Literal["rmsd", "distances", "coordinates"] = _field(
        "rmsd", "distance: RMSD after alignment (same atom order), RMS difference of the "
        "sorted interatomic distances per element pair (molecules: blind to swapped like "
        "atoms and mirror images, as the committee is), or plain coordinates (toys)")
    rank: Literal["objective", "uncertainty", "random"] = _field(
        "objective", "order in which candidates above the gate are taken: by the attack's "
        "objective, by σ²_F, or at random (MD-based AL's frames above the gate)")
    diversity: Literal["none", "fps"] = _field(
        "none", "none: take the gated candidates in rank order; fps: the best ranked, then "
        "farthest-point sampling among the gated ones (distinct regions per generation)")


class ConvergenceSettings(Strict):
    """The stop "the uncertainty can no longer be decreased", on the candidates' σ²_F."""

    statistic: Literal["max", "percentile"] = _field(
        "percentile", "summary of each generation's candidate σ²_F: the largest, or a "
        "percentile")
    percentile: float = _field(90.0, "percentile used when statistic is percentile",
                               ge=0, le=100)
    target: float | None = _field(None, "stop once the statistic is below this ((eV/Å)²; "
                                  "null: no absolute target)", ge=0)
    plateau_generations: int | None = _field(3, "stop when the statistic has not fallen "
                                             "by plateau_fraction within this many "
                                             "generations (null: never)", ge=1)
    plateau_fraction: float = _field(0.1, "relative drop that counts as progress",
                                     ge=0, lt=1)


class LoopSettings(Strict):
    """How long the run goes."""

    generations: int = _field(5, "sampling rounds after generation 0 (a finished run goes on "
                              "with advsample run RUN_DIR --generations N)", ge=1)
    label_budget: int | None = _field(None, "most oracle calls after the initial data "
                                      "(raised for a run with --label-budget N)", ge=1)
    convergence: ConvergenceSettings = Field(default_factory=ConvergenceSettings,
                                             description="the uncertainty stop")


class ExecutorSettings(Strict):
    """Where oracle calls (and parallel training and sampling) run."""

    kind: Literal["inprocess", "processes", "dask"] = _field(
        "inprocess", "in this process, in local worker processes, or on a Dask cluster")
    workers: int = _field(2, "worker processes", ge=1)
    address: str | None = _field(None, "dask: scheduler address (null: a local cluster)")


class EvaluatorBase(Strict):
    """Common keys of an evaluator."""

    name: str | None = _field(None, "key of its numbers in metrics.json (default: the type; "
                              "needed to tell two evaluators of one type apart)")
    every: int = _field(1, "run at generations divisible by this and at the run's last one "
                        "(e.g. 4 for a long NN-MD test: generations 0, 4, 8, ... and the last)",
                        ge=1)


class EvalTestSet(EvaluatorBase):
    """Errors of the committee mean on a labelled test set, per element, and σ vs error."""

    type: Literal["test_set"] = _field("test_set", "evaluator kind")
    file: str = _field(..., "extxyz of structures with oracle energy and forces")


class EvalStability(EvaluatorBase):
    """NN-MD stability: fraction of Langevin runs that stay physical, time to failure, what
    broke (the failed geometries go to <name>_failures.extxyz in the generation's directory)."""

    type: Literal["stability"] = _field("stability", "evaluator kind")
    starts: str | None = _field(None, "extxyz of start structures (null: the first initial "
                                "structure)")
    temperature_K: float = _field(300.0, "NN-MD temperature (K)", gt=0)
    runs: int = _field(16, "runs per start structure", ge=1)
    steps: int = _field(2000, "steps per run", ge=1)
    timestep_fs: float = _field(0.5, "time step (fs)", gt=0)
    floor: float = _field(0.5, "closest allowed interatomic distance (Å)", gt=0)
    bond_tolerance: float = _field(1.2, "two atoms are bonded at the start when closer than "
                                   "this times the sum of their covalent radii", gt=1)
    bond_ceiling: float = _field(1.5, "largest allowed stretch of a starting bond (multiple "
                                 "of its start length)", gt=1)
    seed: int = _field(0, "seed of the runs' momenta and noise")
    parallel: bool = _field(False, "split the runs over the executor's workers, one chunk "
                            "each, run at the same time (chunk c seeded seed + 7919 c)")


class EvalPath(EvaluatorBase):
    """Committee energies along a path of structures, barrier and its error."""

    type: Literal["path"] = _field("path", "evaluator kind")
    file: str | None = _field(None, "extxyz of the path with oracle energies (info key "
                              "'coordinate' optional)")
    generator: Literal["umbrella_inversion"] | None = _field(
        None, "make the path once with the oracle from the system's structure and cache it")
    points: int = _field(21, "generator: structures along the path", ge=3)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.file is None) == (self.generator is None):
            raise ValueError("give exactly one of 'file' or 'generator'")
        return self


class EvalCoverage(EvaluatorBase):
    """Grid cells of one or two collective variables that hold labelled structures."""

    type: Literal["coverage"] = _field("coverage", "evaluator kind")
    cvs: list[list[int]] = _field(..., "each CV as atom indices: 2 = distance (Å), 3 = angle, "
                                  "4 = dihedral (degrees)", min_length=1, max_length=2)
    bins: int = _field(24, "grid cells per CV", ge=2)
    ranges: list[tuple[float, float]] | None = _field(None, "(lo, hi) per CV in Å or degrees; "
                                                      "angles and dihedrals default to their "
                                                      "full range")


class EvalGrid(EvaluatorBase):
    """Toys: energy RMSE of the committee on a regular grid over the box."""

    type: Literal["grid"] = _field("grid", "evaluator kind")
    resolution: int = _field(100, "grid points per coordinate", ge=2)
    low_below: float = _field(0.0, "also report the RMSE where the true energy is below this "
                              "(the surface's energy units)")


class EvalConformers(EvaluatorBase):
    """Molecules with two key torsions: a relaxed (φ, ψ) reference scan (e.g. alanine
    dipeptide): basins holding a training structure, energy and force errors on the scan."""

    type: Literal["conformers"] = _field("conformers", "evaluator kind")
    file: str = _field(..., "extxyz of the relaxed scan: oracle energy and forces, info phi "
                       "and psi (degrees) on a regular grid")
    phi: list[int] = _field(..., "the 4 atom indices of the φ dihedral", min_length=4,
                            max_length=4)
    psi: list[int] = _field(..., "the 4 atom indices of the ψ dihedral", min_length=4,
                            max_length=4)
    window_eV: float = _field(0.4, "grid points and basins within this of the scan's lowest "
                              "energy count (eV)", gt=0)
    basin_radius_deg: float = _field(30.0, "a training structure is in a basin when φ and ψ "
                                     "are both within this of the basin's (degrees)", gt=0)
    basin_temperature_K: float | None = _field(
        300.0, "...and its oracle energy is at most what a thermal frame at this temperature "
        "would have above the basin's relaxed energy (harmonic: mean + 4 std of the "
        "potential energy of 3N-6 modes; 22 atoms at 300 K: 1.34 eV; null: angles only)", gt=0)


Evaluator = Annotated[EvalTestSet | EvalStability | EvalPath | EvalCoverage | EvalGrid
                      | EvalConformers, Field(discriminator="type")]


class RunConfig(Strict):
    """Everything ``advsample run`` needs."""

    seed: int = _field(0, "seed of everything random (splits, initialisation, attacks, MD)")
    device: Literal["cpu", "cuda", "auto"] = _field("cpu", "where the committee runs (auto: "
                                                    "cuda when present)")
    system: SystemConfig = _field(..., "the system")
    initial: InitialConfig = Field(default_factory=InitialConfig,
                                   description="initial labelled data")
    oracle: OracleConfig = Field(default_factory=OracleConfig, description="ground truth")
    committee: CommitteeConfig = Field(default_factory=CommitteeConfig,
                                       description="the committee")
    train: TrainSettings = Field(default_factory=TrainSettings, description="training")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="sampling")
    select: SelectSettings = Field(default_factory=SelectSettings, description="selection")
    loop: LoopSettings = Field(default_factory=LoopSettings, description="stopping rules")
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings,
                                       description="where oracle calls run")
    evaluate: list[Evaluator] = Field(default_factory=list, description="what each "
                                      "generation is judged by (a list; see below)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "umbrella_report" in data:
            raise ValueError("umbrella_report was replaced by an evaluator: add "
                             "{type: path, generator: umbrella_inversion} under 'evaluate'")
        return data

    @model_validator(mode="after")
    def _unique_names(self):
        names = [e.name or e.type for e in self.evaluate]
        if len(set(names)) != len(names):
            raise ValueError("two evaluators share a name: give each a distinct 'name'")
        return self


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run configuration; ConfigError with one line on any problem."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: configuration file does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_config(data or {}, str(path))


def parse_config(data: dict, source: str = "<config>") -> RunConfig:
    """Validate a configuration given as a dict; ConfigError naming ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<top>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")  # a validator's own message, as written
        raise ConfigError(f"{source}: {key}: {msg}") from None
