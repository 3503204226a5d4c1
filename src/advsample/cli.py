"""``advsample run|attack|train|label|stability|status|report``: a thin shell over the Python API.

Heavy imports happen inside each command so ``advsample --help`` is instant. Any problem
with the user's input or environment (a bad file, a missing package, a read-only folder, a
full disk, a run directory in use) is one line on stderr and exit status 2; an interrupt is
one line and exit status 130. Anything else is a bug: its traceback, a one-line hint, exit 1.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sqlite3
import sys
import traceback
from pathlib import Path


def cmd_run(args) -> None:
    """Run or continue an active-learning loop, then write its report (``advsample.run.run``:
    the run directory locked until the report is written)."""
    from advsample.run import run

    state = run(args.config, args.run_dir, progress=not args.quiet,  # logs the run directory
                generations=args.generations, label_budget=args.label_budget)
    print(f"stopped: {state['reason']}; {state['labels']} labels "
          f"({state['failed']} failed); report: {state['report']}")


def cmd_status(args) -> None:
    """Print where a run stands, and which process runs it now if one does."""
    from advsample.report import status
    from advsample.runlock import locked_by
    from advsample.store import naming_store

    with naming_store(Path(args.run)):
        print(status(args.run))
    holder = locked_by(args.run)
    if holder is not None:
        where = "" if holder["this_host"] else " (another host: cannot check it is alive)"
        print(f"  running now: process {holder['pid']} on {holder['host']} since "
              f"{holder.get('started', '?')} ({holder.get('command', '?')}){where}")


def cmd_report(args) -> None:
    """Write a run's report (markdown and PNG plots) and print its path."""
    from advsample.report import write_report
    from advsample.store import naming_store

    with naming_store(Path(args.run)):
        print(write_report(Path(args.run)))


def _read_labelled(path: str, require_labels: bool):
    from advsample.store import read_extxyz
    from advsample.validation import validate_atoms

    atoms = read_extxyz(path)
    validate_atoms(atoms, path, require_labels=require_labels)
    return atoms


def cmd_train(args) -> None:
    """Train a committee on a labelled extxyz file and save the checkpoint."""
    from advsample.committee import Committee
    from advsample.config import CommitteeConfig, TrainSettings, load_config
    from advsample.structures import Batch
    from advsample.train import TrainConfig, fit

    if args.config:
        cfg = load_config(args.config)
        ccfg, tcfg = cfg.committee, cfg.train
    else:
        ccfg, tcfg = CommitteeConfig(), TrainSettings()
    data = Batch.from_atoms(_read_labelled(args.data, require_labels=True))
    committee = Committee.build(ccfg.model, ccfg.size, seed=args.seed, **ccfg.hyperparameters)
    train_cfg = TrainConfig(**{k: v for k, v in tcfg.model_dump().items()
                               if k not in ("warm_start", "parallel")},
                            seed=args.seed, progress=True)
    result = fit(committee, data, train_cfg)
    committee.save(args.output)
    print(f"{args.output}: {result.as_dict()}")


def cmd_attack(args) -> None:
    """Attack seed geometries with a committee; write the attacked structures."""
    import ase.io

    from advsample.attack import AttackConfig, BoltzmannPrior, attack
    from advsample.committee import Committee
    from advsample.structures import Batch

    committee = Committee.load(args.committee)
    seeds_atoms = _read_labelled(args.input, require_labels=False)
    training = Batch.from_atoms(_read_labelled(args.training or args.input, require_labels=True))
    prior = BoltzmannPrior.from_training(training, args.kT)
    cfg = AttackConfig(steps=args.steps, lr=args.lr, restarts=args.restarts,
                       max_displacement=args.max_displacement, min_distance=args.min_distance,
                       seed=args.seed, progress=True)
    cands = attack(committee, Batch.from_atoms(seeds_atoms, labels=False), prior, cfg)
    out = cands.batch.to_atoms()
    for k, a in enumerate(out):
        a.info.update(objective=float(cands.objective[k]), uncertainty=float(
            cands.uncertainty[k]), predicted_energy=float(cands.energy[k]),
            step=int(cands.step[k]), parent=int(cands.parent[k]),
            feasible=bool(cands.feasible[k]))
    ase.io.write(args.output, out, format="extxyz")
    print(f"{args.output}: {len(out)} attacked structures, median σ²_F "
          f"{float(cands.uncertainty.median()):.4g} (eV/Å)²")


def cmd_label(args) -> None:
    """Label the structures of an extxyz file with an oracle."""
    import json

    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from advsample.executors import make_executor
    from advsample.oracles import make_oracle

    oracle = make_oracle(json.loads(args.oracle))
    atoms = _read_labelled(args.input, require_labels=False)
    results = {}
    with make_executor(args.executor, args.workers, args.address) as ex:
        ex.label(oracle, list(enumerate(atoms)), lambda i, r: results.__setitem__(i, r))
    out = []
    for i, a in enumerate(atoms):
        a = a.copy()
        r = results[i]
        a.info.update(status=r.status, message=r.message, seconds=r.seconds)
        if r.ok:
            a.calc = SinglePointCalculator(a, energy=r.energy, forces=r.forces)
        out.append(a)
    ase.io.write(args.output, out, format="extxyz")
    failed = sum(1 for r in results.values() if not r.ok)
    print(f"{args.output}: {len(out) - failed} labelled, {failed} failed")


def cmd_stability(args) -> None:
    """Run NN-MD stability tests of a committee from start structures."""
    import json

    from advsample.committee import Committee
    from advsample.stability import stability_test
    from advsample.structures import Batch

    committee = Committee.load(args.committee)
    committee.compile = args.compile
    starts = Batch.from_atoms(_read_labelled(args.starts, require_labels=False), labels=False)
    result = stability_test(committee, starts, temperature_K=args.temperature,
                            steps=args.steps, dt_fs=args.dt, floor=args.floor,
                            bond_ceiling=args.bond_ceiling,
                            bond_tolerance=args.bond_tolerance, runs_per_start=args.runs,
                            seed=args.seed, progress=True)
    summary = result.as_dict()
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=1))
    print(f"{result.fraction_stable:.3f} of {len(result.reason)} runs stable over "
          f"{args.steps * args.dt:.0f} fs at {args.temperature:.0f} K")


def cmd_check(args) -> None:
    """Check every frame of a trajectory against a committee's safe zone.

    Prints, per frame, its bound and whether it is inside the safe zone (bound ≤ threshold).
    The bound is the largest per-atom calibrated 1 − α force-error bound q·σ_i (eV/Å) or,
    when no calibration is found, the raw largest committee spread σ_i = sqrt(σ²_i) (eV/Å, not
    an error estimate); the header says which. Calibration: ``--calibration``, else
    ``calibration.json`` beside the checkpoint. Threshold: ``--bound``, else the calibration's
    ``recommended_bound``, else a one-line error asking for ``--bound``. ``-o`` writes the
    per-frame table as CSV (JSON when its name ends in .json), ``--plot`` a PNG of the bound
    along the trajectory with the threshold. Exit status: 0 every frame inside, 1 a frame
    outside (raised as SystemExit(1) after the outputs are written), 2 bad input.
    """
    import csv
    import json

    import numpy as np

    from advsample.calibration import Calibration, beside
    from advsample.committee import Committee
    from advsample.structures import Batch
    from advsample.uncertainty import atom_force_variance

    committee = Committee.load(args.committee)
    cal_path = Path(args.calibration) if args.calibration else beside(args.committee)
    calibration = (Calibration.load(cal_path) if args.calibration or cal_path.is_file()
                   else None)
    if calibration is not None and calibration.level != "atom":
        raise ValueError(f"{cal_path}: level {calibration.level!r}; check needs a per-atom "
                         "calibration (level 'atom')")
    threshold = args.bound
    if threshold is None and calibration is not None:
        threshold = calibration.recommended_bound
    if threshold is None:
        source = f"; {cal_path} has no recommended_bound" if calibration is not None else ""
        raise ValueError(f"no safe-zone threshold: give one with --bound (eV/Å){source}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"--bound must be a positive number of eV/Å, got {threshold}")
    frames = _read_labelled(args.trajectory, require_labels=False)

    max_sigma, worst = [], []
    for start in range(0, len(frames), 256):
        batch = Batch.from_atoms(frames[start:start + 256], labels=False)
        forces = committee(batch.to(device=committee.device)).forces.detach()
        sigma = atom_force_variance(forces).double().sqrt().cpu().numpy()  # [n] (eV/Å)
        for part in np.split(sigma, np.cumsum(batch.n_atoms.cpu().numpy())[:-1]):
            worst.append(int(np.argmax(part)))
            max_sigma.append(float(part.max()))
    max_sigma = np.array(max_sigma)
    bound = (np.asarray(calibration.bound(max_sigma), dtype=float) if calibration is not None
             else max_sigma)  # q·σ is increasing in σ: the largest bound is q·max σ_i
    inside = bound <= threshold  # NaN: outside

    if calibration is not None:
        kind = "calibrated"
        header = (f"# bound: largest per-atom calibrated {1 - calibration.alpha:.0%} "
                  f"force-error bound q·σ_i (eV/Å), q = {calibration.q:.4g}, from {cal_path}")
    else:
        kind = "raw_sigma"
        header = ("# bound: largest raw committee spread σ_i (eV/Å): no calibration found, so "
                  "not an error estimate (give --calibration or save calibration.json beside "
                  "the checkpoint)")
    print(header)
    print(f"# safe zone: bound <= {threshold:.4g} eV/Å")
    print("frame\tbound\tzone")
    for k in range(len(frames)):
        print(f"{k}\t{bound[k]:.4g}\t{'inside' if inside[k] else 'OUTSIDE'}")
    outside = [int(k) for k in np.flatnonzero(~inside)]
    listed = ", ".join(map(str, outside[:10])) + (", ..." if len(outside) > 10 else "")
    print(f"{len(outside)} of {len(frames)} frames outside the safe zone"
          + (f": frames {listed}" if outside else ""))

    rows = [{"frame": k, "bound": float(bound[k]), "max_sigma": float(max_sigma[k]),
             "worst_atom": worst[k], "inside": bool(inside[k])} for k in range(len(frames))]
    if args.output:
        out = Path(args.output)
        if out.suffix.lower() == ".json":
            out.write_text(json.dumps({
                "committee": str(args.committee), "trajectory": str(args.trajectory),
                "calibration": str(cal_path) if calibration is not None else None,
                "kind": kind, "alpha": calibration.alpha if calibration is not None else None,
                "threshold": threshold, "outside": outside,
                "frames": [{**r, "bound": r["bound"] if np.isfinite(r["bound"]) else None}
                           for r in rows]}, indent=1))
        else:
            with open(out, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(np.arange(len(frames)), bound, "-", lw=1, label="bound")
        if outside:
            ax.plot(outside, bound[outside], "o", color="tab:red", ms=4, label="outside")
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
        ax.set_xlabel("frame")
        ax.set_ylabel("calibrated force-error bound (eV/Å)" if calibration is not None
                      else "largest σ_i, uncalibrated (eV/Å)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
    if outside:
        raise SystemExit(1)


def cmd_config(args) -> None:
    """Print a commented example configuration or the configuration reference."""
    from advsample.config_docs import example_yaml, reference_markdown

    if args.example:
        print(example_yaml(), end="")
    elif args.reference:
        print(reference_markdown(), end="")
    else:
        raise ValueError("say what to print: advsample config --example or --reference")


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="advsample", description="Uncertainty-based adversarial "
                                "sampling for neural-network interatomic potentials.")
    p.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run or continue an active-learning loop")
    r.add_argument("config", help="YAML configuration, or an existing run directory")
    r.add_argument("--run-dir", help="where the run lives (default runs/<config name>)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--generations", type=int, metavar="N",
                   help="continue an existing run up to N generations (raises loop.generations "
                        "in its stored config.yaml)")
    r.add_argument("--label-budget", type=int, metavar="N",
                   help="continue an existing run up to N oracle calls after its initial data "
                        "(raises loop.label_budget)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="where a run stands")
    s.add_argument("run")
    s.set_defaults(func=cmd_status)

    rep = sub.add_parser("report", help="write plots and a markdown summary of a run")
    rep.add_argument("run")
    rep.set_defaults(func=cmd_report)

    t = sub.add_parser("train", help="train a committee on labelled extxyz data")
    t.add_argument("data", help="extxyz with energy and forces")
    t.add_argument("-o", "--output", default="committee.pt")
    t.add_argument("--config", help="YAML whose committee/train sections to use")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("attack", help="attack seed geometries with a committee")
    a.add_argument("committee", help="committee checkpoint (.pt)")
    a.add_argument("input", help="seed geometries (extxyz)")
    a.add_argument("-o", "--output", default="attacked.extxyz")
    a.add_argument("--training", help="labelled training extxyz for Q (default: input)")
    a.add_argument("--kT", type=float, default=0.05, help="eV per atom")
    a.add_argument("--steps", type=int, default=200)
    a.add_argument("--lr", type=float, default=0.01)
    a.add_argument("--restarts", type=int, default=1)
    a.add_argument("--max-displacement", type=float, default=0.6)
    a.add_argument("--min-distance", type=float, default=0.7)
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=cmd_attack)

    st = sub.add_parser("stability", help="fraction of NN-MD runs that stay physical")
    st.add_argument("committee", help="committee checkpoint (.pt)")
    st.add_argument("starts", help="starting geometries (extxyz)")
    st.add_argument("--temperature", type=float, default=1000.0, help="K")
    st.add_argument("--steps", type=int, default=4000)
    st.add_argument("--dt", type=float, default=0.5, help="time step, fs")
    st.add_argument("--runs", type=int, default=32, help="runs per starting geometry")
    st.add_argument("--floor", type=float, default=0.5, help="closest allowed pair, Å")
    st.add_argument("--bond-ceiling", type=float, default=1.5,
                    help="largest allowed stretch of a starting bond (multiple)")
    st.add_argument("--bond-tolerance", type=float, default=1.2,
                    help="bonded at the start: closer than this times the covalent radii sum")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--compile", action="store_true",
                    help="torch.compile the committee first (about a minute; pays off over "
                    "thousands of steps)")
    st.add_argument("-o", "--output", help="write the per-run results as JSON")
    st.set_defaults(func=cmd_stability)

    ck = sub.add_parser("check", help="are the frames of a trajectory inside a committee's "
                        "safe zone?", description="Per frame, the calibrated force-error bound "
                        "(or the raw largest σ_i without a calibration) against a threshold. "
                        "Exit status: 0 every frame inside, 1 a frame outside, 2 bad input.")
    ck.add_argument("committee", help="committee checkpoint (.pt)")
    ck.add_argument("trajectory", help="frames to check (extxyz)")
    ck.add_argument("--calibration",
                    help="calibration JSON (default: calibration.json beside the checkpoint)")
    ck.add_argument("--bound", type=float, help="safe-zone threshold on the bound, eV/Å "
                    "(default: the calibration's recommended_bound)")
    ck.add_argument("-o", "--output",
                    help="per-frame table: CSV, or JSON when the name ends in .json")
    ck.add_argument("--plot", help="PNG of the bound along the trajectory and the threshold")
    ck.set_defaults(func=cmd_check)

    lb = sub.add_parser("label", help="label structures with an oracle")
    lb.add_argument("input")
    lb.add_argument("-o", "--output", default="labelled.extxyz")
    lb.add_argument("--oracle", default='{"type": "xtb", "method": "GFN2-xTB"}',
                    help="oracle spec as JSON")
    lb.add_argument("--executor", default="inprocess",
                    choices=["inprocess", "processes", "dask"])
    lb.add_argument("--workers", type=int, default=2)
    lb.add_argument("--address", help="Dask scheduler address")
    lb.set_defaults(func=cmd_label)

    c = sub.add_parser("config", help="print a commented example config or the key reference")
    what = c.add_mutually_exclusive_group()
    what.add_argument("--example", action="store_true",
                      help="a starting YAML config: every key, its default and meaning")
    what.add_argument("--reference", action="store_true",
                      help="the markdown reference of every key (docs/config.md)")
    c.set_defaults(func=cmd_config)
    return p


def _os_error_text(exc: OSError) -> str:
    """One line for ``exc``, e.g. "cannot write runs/x/labels.db: Read-only file system"."""
    if exc.filename is None or not exc.strerror:
        text = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            text += " (free some space, then run the same command again)"
        return text
    name = os.fsdecode(exc.filename)
    if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {name}: {exc.strerror}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        readable = not os.path.exists(name) or os.access(name, os.R_OK)
        return f"cannot {'write' if readable else 'read'} {name}: {exc.strerror}"
    return f"{name}: {exc.strerror}"


def error_text(exc: BaseException) -> str | None:
    """The one-line message of an error caused by the user's input or environment, None for
    anything else (a bug).

    User errors are ValueError (advsample's ConfigError, CheckpointError, RunLocked, pydantic's
    ValidationError are ValueErrors), ImportError (a missing optional package), OSError
    (missing or unreadable files, read-only folders, a full disk) and sqlite3 errors.
    """
    if isinstance(exc, OSError):
        text = _os_error_text(exc)
    elif isinstance(exc, (ValueError, ImportError, sqlite3.DatabaseError)):
        text = str(exc) or type(exc).__name__
    else:
        return None
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv=None) -> int:
    """Entry point: parse ``argv``, run the command; 0 on success, 2 on bad input or a problem
    of the environment, 130 when interrupted, 1 on a bug (with its traceback)."""
    from advsample.runtime import tune_allocator

    args = parser().parse_args(argv)
    tune_allocator()
    verbose = args.verbose or args.command == "run"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(message)s")
    try:
        args.func(args)
    except KeyboardInterrupt:
        resumes = "; the run resumes with the same command" if args.command == "run" else ""
        print(f"advsample: interrupted{resumes}", file=sys.stderr)
        return 130
    except Exception as exc:
        text = error_text(exc)
        if text is None:
            traceback.print_exc()
            print(f"advsample: internal error ({type(exc).__name__}): a bug in advsample or a "
                  "library it uses; please report it with the traceback above", file=sys.stderr)
            return 1
        print(f"advsample: error: {text}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
