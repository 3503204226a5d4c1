"""The run configuration: typed, validated, loaded from YAML.

Unknown keys and wrong types are errors that name the file and the key, e.g.
``examples/x.yaml: sampler.steps: Input should be a valid integer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message is one line."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemConfig(Strict):
    """The molecule: an ASE molecule name (``NH3``) or a structure file."""

    molecule: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.molecule is None) == (self.file is None):
            raise ValueError("give exactly one of 'molecule' or 'file'")
        return self


class InitialConfig(Strict):
    """Initial labelled data: an extxyz file, or oracle MD / normal-mode sampling."""

    file: str | None = None
    method: Literal["md", "normal_modes"] = "md"
    temperature_K: float = Field(300.0, gt=0)
    frames: int = Field(40, ge=2)
    interval: int = Field(10, ge=1)
    timestep_fs: float = Field(0.5, gt=0)
    optimize_first: bool = True


class OracleConfig(Strict):
    """Ground truth: xtb (tblite), pyscf, emt, or any ASE calculator by import path."""

    type: Literal["xtb", "pyscf", "emt", "ase"] = "xtb"
    method: str | None = None
    preset: str | None = None
    xc: str | None = None
    basis: str | None = None
    charge: int = 0
    spin: int = 0
    calculator: str | None = None
    kwargs: dict = Field(default_factory=dict)

    def spec(self) -> dict:
        """The dict ``advsample.oracles.make_oracle`` takes."""
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
        return spec


class CommitteeConfig(Strict):
    model: Literal["painn", "mace", "mlp"] = "painn"
    size: int = Field(4, ge=2)
    hyperparameters: dict = Field(default_factory=lambda: {
        "features": 32, "interactions": 2, "cutoff": 4.0})


class TrainSettings(Strict):
    epochs: int = Field(400, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int | None = Field(32, ge=1)
    energy_weight: float = Field(1.0, ge=0)
    forces_weight: float = Field(10.0, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(60, ge=1)
    lr_patience: int = Field(20, ge=1)
    warm_start: bool = False
    parallel: bool = False  # train members separately on the executor's workers


class SamplerConfig(Strict):
    """The attack and its baselines (random displacements, NN-MD). Lengths in Å, energies
    in eV, kT in eV/atom; md_* set the NN-MD baseline (temperature, steps per trajectory,
    time step, frames kept every md_interval steps, trust bound on σ²_F in (eV/Å)²)."""

    type: Literal["attack", "random", "md"] = "attack"
    kT: float = Field(0.05, gt=0)
    steps: int = Field(200, ge=1)
    lr: float = Field(0.01, gt=0)
    init_scale: float = Field(0.01, ge=0)
    restarts: int = Field(4, ge=1)
    seeds: int | None = Field(None, ge=1)
    reduce: Literal["mean", "max", "sum"] = "mean"
    max_displacement: float | None = Field(0.6, gt=0)
    min_distance: float | None = Field(0.7, gt=0)
    energy_ceiling: float | None = Field(None, gt=0)
    random_scale: float = Field(0.1, gt=0)
    md_temperature_K: float = Field(600.0, gt=0)
    md_steps: int = Field(2000, ge=1)
    md_timestep_fs: float = Field(0.5, gt=0)
    md_interval: int = Field(20, ge=1)
    md_max_uncertainty: float | None = Field(None, gt=0)


class SelectSettings(Strict):
    max_new: int = Field(20, ge=1)
    gate_percentile: float | None = Field(80.0, ge=0, le=100)
    gate_absolute: float | None = Field(None, ge=0)
    min_separation: float = Field(0.03, ge=0)
    metric: Literal["rmsd", "coordinates"] = "rmsd"


class LoopSettings(Strict):
    generations: int = Field(5, ge=1)
    label_budget: int | None = Field(None, ge=1)


class ExecutorSettings(Strict):
    kind: Literal["inprocess", "processes", "dask"] = "inprocess"
    workers: int = Field(2, ge=1)
    address: str | None = None


class RunConfig(Strict):
    """Everything ``advsample run`` needs."""

    seed: int = 0
    system: SystemConfig
    initial: InitialConfig = Field(default_factory=InitialConfig)
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    committee: CommitteeConfig = Field(default_factory=CommitteeConfig)
    train: TrainSettings = Field(default_factory=TrainSettings)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    select: SelectSettings = Field(default_factory=SelectSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    umbrella_report: bool = False


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
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<top>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{source}: {key}: {msg}") from None
