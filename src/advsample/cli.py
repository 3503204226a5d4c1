"""``advsample run|attack|train|label|stability|status|report``: a thin shell over the Python API.

Heavy imports happen inside each command so ``advsample --help`` is instant. Any problem
with the user's input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def cmd_run(args) -> None:
    """Run or continue an active-learning loop, then write its report."""
    from advsample.report import write_report
    from advsample.run import CONFIG_NAME, resume, start

    target = Path(args.config)
    if target.is_dir():
        if not (target / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{target} is a directory but not a run (no {CONFIG_NAME})")
        al = resume(target, progress=not args.quiet)
    else:
        run_dir = Path(args.run_dir or Path("runs") / target.stem)
        al = start(target, run_dir, progress=not args.quiet)
    print(f"run directory: {al.run_dir}")
    state = al.run()
    report = write_report(al.run_dir)
    print(f"stopped: {state['reason']}; {state['labels']} labels "
          f"({state['failed']} failed); report: {report}")


def cmd_status(args) -> None:
    """Print where a run stands."""
    from advsample.report import status

    print(status(args.run))


def cmd_report(args) -> None:
    """Write a run's report (markdown and PNG plots) and print its path."""
    from advsample.report import write_report

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


def main(argv=None) -> int:
    """Entry point: parse ``argv``, run the command; 0 on success, 2 on bad input."""
    from advsample.runtime import tune_allocator

    args = parser().parse_args(argv)
    tune_allocator()
    verbose = args.verbose or args.command == "run"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"advsample: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
