"""Generation 0 of a run: the initial labelled data, made once and continued after a kill.

Kinds (config ``initial``): an extxyz file, imported in one transaction; toy points in a box
(labelled at once: an analytic oracle takes microseconds); or data made with the oracle
around the system's structure, relaxed first (``optimize_first``). In a run directory every
oracle result is kept as soon as it exists, under ``initial/``::

    initial/relaxed.traj     the relaxed starting structure (exact positions)
    initial/relax_calls.pkl  every oracle result of the relaxation (advsample.replay)
    initial/md.npz           oracle MD: the trajectory's state after its last step
    initial/hessian.npz      normal modes: the finite-difference forces computed so far
    initial/complete.json    written last: generation 0 is complete

Oracle-MD frames are committed to the store as they are kept; normal-mode displacements are
written as pending rows of generation 0 and labelled by the loop like any other pending
row. A resumed run sends the oracle no geometry it already has a result for (only a call
cut short by the kill itself is made again).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ase.io
from ase import Atoms
from ase.build import molecule

from advsample.config import RunConfig

log = logging.getLogger("advsample")
COMPLETE = "complete.json"


def initial_structure(config: RunConfig) -> Atoms:
    """The system's starting structure (ase.Atoms)."""
    system = config.system
    if system.molecule:
        try:
            return molecule(system.molecule)
        except KeyError:
            raise ValueError(f"system.molecule: ASE knows no molecule {system.molecule!r}"
                             ) from None
    path = Path(system.file)
    if not path.exists():
        raise FileNotFoundError(f"system.file {path} does not exist")
    return ase.io.read(path)


def make_initial_data(config: RunConfig, store, oracle, run_dir: Path | None) -> None:
    """Generation 0 of ``store`` made, or continued where a killed run left it; nothing when
    it is complete (in memory: when the store holds any generation-0 row)."""
    folder = None if run_dir is None else Path(run_dir) / "initial"
    if folder is None and store.count(generation=0):
        return
    if folder is not None and (folder / COMPLETE).exists():
        return
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    init = config.initial
    if init.file:
        if not store.count(generation=0):
            _import_file(init.file, store, run_dir)
    elif init.method == "uniform_box":
        _box_points(config, store, oracle)
    else:
        log.info("initial data: %s, %d frames", init.method, init.frames)
        atoms = _start_structure(config, oracle, folder)
        if init.method == "md":
            _md_frames(config, atoms, store, oracle, folder)
        elif not store.count(generation=0):
            _normal_mode_rows(config, atoms, store, oracle, folder)
    if not store.count(generation=0):
        raise ValueError("initial: no structure was generated (energy_max too low?)")
    if folder is not None:
        _write_atomic(folder / COMPLETE, json.dumps(
            {"method": "file" if init.file else init.method,
             "rows": store.count(generation=0)}, indent=1))


def _import_file(path: str, store, run_dir: Path | None) -> None:
    """The initial extxyz file into the store (validated first, one transaction)."""
    if run_dir is None:
        from advsample.store import read_extxyz

        store.add_labelled(read_extxyz(path))
    else:
        store.import_extxyz(path, generation=0, sampler="initial")


def _box_points(config: RunConfig, store, oracle) -> None:
    """Toy initial data: uniform points in the box below ``energy_max``, all at once."""
    from advsample.initial_data import uniform_box_points

    init = config.initial
    if config.system.dim == 3:
        raise ValueError("initial.method: uniform_box is for toy systems (system.dim 1 or 2)")
    if not store.count(generation=0):
        store.add_labelled(uniform_box_points(oracle, init.frames, init.energy_max,
                                              config.system.box, config.system.dim,
                                              seed=config.seed), generation=0,
                           sampler="initial")


def _start_structure(config: RunConfig, oracle, folder: Path | None) -> Atoms:
    """The system's structure, relaxed with the oracle when asked (cached in ``folder``)."""
    atoms = initial_structure(config)
    if not config.initial.optimize_first:
        return atoms
    cache = None if folder is None else folder / "relaxed.traj"
    if cache is not None and cache.exists():
        return ase.io.read(cache)
    from advsample.initial_data import relaxed

    calculator = oracle.calculator()
    if folder is not None:  # a killed relaxation is replayed, not recomputed
        from advsample.replay import ReplayCalculator

        calculator = ReplayCalculator(calculator, folder / "relax_calls.pkl")
    atoms = relaxed(atoms, calculator)
    if cache is not None:
        tmp = cache.with_suffix(".tmp.traj")
        ase.io.write(tmp, atoms, format="traj")
        os.replace(tmp, cache)
    return atoms


def _md_frames(config: RunConfig, atoms: Atoms, store, oracle, folder: Path | None) -> None:
    """Oracle MD from ``atoms``, each kept frame committed to the store as it comes."""
    from advsample.initial_data import oracle_md

    init = config.initial

    def commit(k: int, frame: Atoms) -> None:
        """Frame k into the store unless a killed run committed it already."""
        if k >= store.count(generation=0):
            store.add_labelled([frame], generation=0, sampler="initial")

    calculator = oracle.calculator()
    if folder is not None and (folder / "relax_calls.pkl").exists():
        from advsample.replay import ReplayCalculator  # the relaxed structure is known

        calculator = ReplayCalculator(calculator, folder / "relax_calls.pkl", record=False)
    oracle_md(atoms, oracle, init.temperature_K, steps=init.interval * (init.frames - 1),
              timestep_fs=init.timestep_fs, interval=init.interval, seed=config.seed,
              checkpoint=None if folder is None else folder / "md.npz", on_frame=commit,
              calculator=calculator)


def _normal_mode_rows(config: RunConfig, atoms: Atoms, store, oracle,
                      folder: Path | None) -> None:
    """Normal-mode displacements of ``atoms`` as pending rows of generation 0."""
    from advsample.initial_data import normal_mode_displacements

    init = config.initial
    frames = normal_mode_displacements(
        atoms, oracle, init.temperature_K, init.frames, seed=config.seed,
        hessian_cache=None if folder is None else folder / "hessian.npz")
    store.add_pending(frames, [{"generation": 0, "sampler": "initial"}] * len(frames))


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
