"""Does the zeolite benchmark's NN-MD judge pass the oracle's own dynamics?

    python benchmarks/zeolites_judge.py                       # ~70 min of one core
    python benchmarks/zeolites_judge.py --aggregate-only      # only rewrite the docs

A success test is only meaningful if the reference itself succeeds under it: a guest whose
N-H bond GFN1-xTB stretches past 1.5x at 900 K, or a proton that hops to the framework,
would fail every NN run for a reason no training can remove. So: GFN1-xTB Langevin MD (the
oracle, through ASE) from the first complex of each held-out and of each training framework
of benchmarks/zeolites.py (its reference directory must exist: run that benchmark first),
at the temperatures and with the time step and friction of the benchmark's NN-MD tests,
for ``--steps`` steps (0.3 ps by default: longer than the median time to failure of the
benchmark's first NN committees, ~0.2-0.4 ps), a frame every ``--interval`` steps judged by
the same rules (``advsample.stability.judge_frames``: no pair closer than 0.5 Å, no starting
bond stretched past 1.5x). Reports per run the verdict, the largest bond stretch (and that of
the bonds between framework and guest atoms) and the closest contact seen, so the margin to
the thresholds is visible. ``--complexes framework_guest`` runs instead every complex with
a starting bond between framework and guest (an amine N ~2 Å from a Si counts as bonded):
whether the oracle itself keeps such a bond over a whole NN-MD test (``--steps 4000``, 2 ps).
A run stops at the first frame that fails. Runs are resumable (MD state after every step)
and each finished one is kept in <work dir>/judge/ and not run again. Writes
docs/benchmarks/<--doc-name>.{md,json} (zeolites_judge).
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common
from loops import configure, method_config
from zeolites import FILES as CONFIG_FILES

FILES = {"held_out": "held_out.extxyz", "training": "train_starts.extxyz"}  # in reference/
FRAMEWORK = frozenset({"Si", "O", "Al", "Ge", "P", "B"})  # every other element: the guest's


def first_per_framework(complexes: list[dict]) -> list[int]:
    """Indices of the first complex of each framework in ``complexes`` (subset.json's)."""
    seen, index = set(), []
    for k, c in enumerate(complexes):
        if c["host"] not in seen:
            seen.add(c["host"])
            index.append(k)
    return index


def framework_guest_bonds(atoms, tolerance: float):
    """Mask [P] of the starting bonds of ``atoms`` (the judge's, within ``tolerance`` x the
    covalent radii sum) that join a framework atom to a guest atom, and the bonds."""
    import torch

    from advsample.stability import starting_bonds
    from advsample.structures import Batch

    bonds = starting_bonds(Batch.from_atoms([atoms]).without_labels(), tolerance)
    framework = torch.tensor([s in FRAMEWORK for s in atoms.get_chemical_symbols()])
    return framework[bonds.i] != framework[bonds.j], bonds


def with_framework_guest_bonds(starts: list, tolerance: float) -> list[int]:
    """Indices of the complexes in ``starts`` with a starting bond between the framework and
    the guest (e.g. an amine N ~2 Å from a Si): the bonds whose breaking the judge counts as
    a failure although the guest may leave that site in the oracle's own dynamics."""
    return [k for k, a in enumerate(starts) if framework_guest_bonds(a, tolerance)[0].any()]


class _Failed(Exception):
    """The oracle's own trajectory failed the judge: the run stops there."""


def trajectory(job) -> list:
    """Oracle MD frames of one (complex, temperature) run, up to and including the first
    frame the judge fails (read back when already run). Resumable: kept frames go to
    <out>.part.extxyz as they come and the MD state to <out>.npz after every step."""
    import ase.io

    from advsample.initial_data import oracle_md
    from advsample.oracles import make_oracle
    from advsample.stability import judge_frames
    from advsample.structures import Batch

    atoms, oracle, temperature, steps, interval, dt, friction, seed, test, out = job
    done, part = Path(out), Path(out).with_suffix(".part.extxyz")
    if done.exists():
        return ase.io.read(done, ":")
    have = len(ase.io.read(part, ":")) if part.exists() else 0
    start = Batch.from_atoms([atoms]).without_labels()

    def commit(k: int, frame) -> None:
        if k >= have:  # a restart offers the checkpoint's own frame again
            ase.io.write(part, frame, format="extxyz", append=True)
        verdict = judge_frames(start, Batch.from_atoms([frame]).without_labels(),
                               test.floor, test.bond_ceiling, test.bond_tolerance)[0]
        if verdict != "ok":
            raise _Failed(verdict)

    try:
        oracle_md(atoms, make_oracle(oracle), temperature, steps, timestep_fs=dt,
                  interval=interval, seed=seed, friction_per_fs=friction,
                  checkpoint=done.with_suffix(".npz"), on_frame=commit)
    except _Failed:
        pass
    part.replace(done)
    done.with_suffix(".npz").unlink(missing_ok=True)
    return ase.io.read(done, ":")


def judge(frames: list, test) -> dict:
    """Verdict of one trajectory by the rules of the stability test ``test`` (its floor, bond
    tolerance and ceiling): reasons per frame, largest stretch of a starting bond and closest
    contact over all frames."""
    from advsample.geometry import min_interatomic_distance
    from advsample.stability import judge_frames, starting_bonds
    from advsample.structures import Batch

    starts = Batch.from_atoms([frames[0]] * len(frames)).without_labels()
    batch = Batch.from_atoms(frames).without_labels()
    reasons = judge_frames(starts, batch, test.floor, test.bond_ceiling, test.bond_tolerance)
    bonds = starting_bonds(starts, test.bond_tolerance)  # every frame's, start-major
    stretch = bonds.lengths(batch.positions) / bonds.length  # [frames x bonds]
    contact = min_interatomic_distance(batch, within=3.0)
    failed = [r for r in reasons if r != "ok"]
    across, _ = framework_guest_bonds(frames[0], test.bond_tolerance)
    across = across.repeat(len(frames))  # the same bonds in every frame, start-major
    return {"frames": len(frames), "verdict": failed[0] if failed else "ok",
            "first_failure_frame": next((k for k, r in enumerate(reasons) if r != "ok"), None),
            "bonds": int((bonds.i < bonds.j).sum()) // len(frames),
            "max_stretch": float(stretch.max()),
            "max_stretch_framework_guest": float(stretch[across].max()) if across.any()
            else None,
            "min_contact": float(contact.min())}


def main():
    p = common.bench_args(__doc__.splitlines()[0], "zeolites", workers=1)
    p.add_argument("--temperatures", type=float, nargs="+", default=[600.0, 900.0])
    p.add_argument("--steps", type=int, default=600, help="MD steps per run")
    p.add_argument("--interval", type=int, default=10, help="steps between judged frames")
    p.add_argument("--sets", nargs="+", default=["held_out", "training"], choices=list(FILES))
    p.add_argument("--complexes", choices=["first", "framework_guest"], default="first",
                   help="the first complex of each framework, or every complex with a "
                        "starting bond between framework and guest (%(default)s)")
    p.add_argument("--doc-name", default="zeolites_judge",
                   help="stem of the .md/.json written (%(default)s)")
    args = p.parse_args()
    import ase.io

    from advsample.config import parse_config
    from advsample.evaluators.md_stability import StabilityEvaluator

    ref = args.work_dir.resolve() / "reference"
    subset = json.loads((ref / "subset.json").read_text())
    config = parse_config(method_config(configure(CONFIG_FILES, ref, [])))
    test = next(e for e in config.evaluate if e.name == "stability_held_out")
    oracle = config.oracle.spec()
    dt, friction = test.timestep_fs, StabilityEvaluator.friction_per_fs
    starts = {name: ase.io.read(ref / FILES[name], ":") for name in args.sets}
    out_dir = args.work_dir.resolve() / "judge"
    out_dir.mkdir(exist_ok=True)
    chosen = {name: first_per_framework(subset[name]) if args.complexes == "first"
              else with_framework_guest_bonds(starts[name], test.bond_tolerance)
              for name in args.sets}
    runs = [(name, k, t) for name in args.sets for k in chosen[name] for t in args.temperatures]
    jobs = [(starts[name][k], oracle, t, args.steps, args.interval, dt, friction, k, test,
             str(out_dir / f"{name}_{k}_{t:g}K_{args.steps}steps.extxyz"))
            for name, k, t in runs]
    if args.aggregate_only:  # only the runs already made
        made = [Path(j[-1]).exists() for j in jobs]
        runs = [r for r, m in zip(runs, made, strict=True) if m]
        jobs = [j for j, m in zip(jobs, made, strict=True) if m]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")
                             ) as pool:
        trajectories = list(pool.map(trajectory, jobs))
    rows = []
    for (name, k, t), frames in zip(runs, trajectories, strict=True):
        c = subset[name][k]
        rows.append({"set": name, "complex": k, "host": c["host"], "guest": c["guest"],
                     "atoms": c["atoms"], "temperature_K": t,
                     "time_fs": (len(frames) - 1) * args.interval * dt,
                     **judge(frames, test)})
    command = " ".join(["python", "benchmarks/zeolites_judge.py", *(
        common.relative(Path(a)) if a.startswith("/") else a for a in sys.argv[1:])])
    settings = {"command": command, "steps": args.steps, "complexes": args.complexes,
                "interval": args.interval, "timestep_fs": dt, "friction_per_fs": friction,
                "floor": test.floor, "bond_ceiling": test.bond_ceiling,
                "bond_tolerance": test.bond_tolerance, "oracle": oracle,
                "work_dir": common.relative(args.work_dir)}
    (args.out_dir / f"{args.doc_name}.json").write_text(json.dumps(
        {"settings": settings, "runs": rows}, indent=1))
    method = oracle.get("method") or oracle["type"]
    which = ("the first complex of each framework" if args.complexes == "first" else
             "every complex with a starting bond between framework and guest")
    lines = ["# The zeolite judge on the oracle's own dynamics", "",
             f"{method} Langevin MD from {which} "
             f"(`{common.relative(ref)}`), {args.steps} steps of {dt:g} fs, friction "
             f"{friction:g}/fs, a frame every {args.interval} steps judged as the NN-MD tests "
             f"are (contact < {test.floor:g} Å or a starting bond > {test.bond_ceiling:g}x "
             "fails; the closest contact includes bonded pairs). Command: "
             f"`{settings['command']}`.", "",
             "| set | complex | atoms | T (K) | time (fs) | bonds | verdict | largest stretch "
             "| largest framework-guest stretch | closest contact (Å) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['host']}/{r['guest']} | {r['atoms']} | {r['temperature_K']:g} | "
              f"{r['time_fs']:g} | {r['bonds']} | {r['verdict']} | {r['max_stretch']:.3f}x | "
              + (f"{r['max_stretch_framework_guest']:.3f}x"
                 if r["max_stretch_framework_guest"] is not None else "–")
              + f" | {r['min_contact']:.3f} |" for r in rows]
    print(common.write_markdown(args.doc_name, "\n".join(lines) + "\n", args.out_dir)
          .read_text())


if __name__ == "__main__":
    main()
