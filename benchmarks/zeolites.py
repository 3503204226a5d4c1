"""Zeolite host-guest complexes (the paper's headline): NN-MD success vs labels added,
adversarial attacks vs MD-based active learning, GFN1-xTB (tblite, periodic) as the oracle.

    python benchmarks/zeolites.py                     # 1 repeat x 3 methods, hours on 2 cores
    python benchmarks/zeolites.py --aggregate-only    # only rewrite the docs from the runs

Subset of ../shared/data/zeolites_host_guest.json that 2 CPU cores can handle: cells of
<= 60 atoms. Training: ``--per-framework`` complexes (distinct guests first) of each of the
``--frameworks`` frameworks with most such cells (SOD, SBN, THO). Held out: ``--per-held-out``
complexes of each of the next ``--held-out-frameworks`` frameworks (DFT, CAN, MVY, ABW), which
no training complex uses; never labelled or used as a seed. Made once in
runs/benchmarks/zeolites/reference/: train_starts.extxyz, held_out.extxyz, subset.json and
initial.extxyz (short GFN1-xTB Langevin MD of each training complex). Loops:
benchmarks/configs/zeolites.yaml (seed = repeat, the method's overrides from its
``methods``: attack, MD-AL at 300 K and at the 600 K test temperature; ``--set`` as in
loops.py; each generation's committee warm-starts from the previous one; 5 labels per
generation), judged by NN-MD of 2 ps: at 600 K from every training complex (2 runs each),
at 600 K and at 900 K from every held-out complex (4 runs each, 32 per temperature), at the
generations each test's ``every`` names (held out at 600 K: 0, 4 and the last; the others:
0 and the last; one 2 ps test is ~20 min of a core); a run succeeds when no atom pair comes
closer than 0.5 Å and no bond of the starting connectivity (within 1.2x the covalent radii
sum: Si-O, C-H, N-H, ...) stretches past 1.5x (benchmarks/zeolites_judge.py checks that
GFN1-xTB's own MD passes this judge). Loops run in runs/benchmarks/zeolites/<method>/
repeat_<r>/ (resumable); writes docs/benchmarks/zeolites.{md,json} and zeolites_curves.png,
the document ending with each test's successful runs per complex and failures by culprit,
and the committees' force and energy errors on GFN1-xTB MD of held-out complexes where
benchmarks/zeolites_judge.py made it (<work dir>/judge/).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import common
from loops import CONFIGS, benchmark, configure, method_config, parser, prepare

DATA = common.REPO.parent / "shared" / "data" / "zeolites_host_guest.json"
FILES = [f"{CONFIGS}/zeolites.yaml"]
KEYS = {"stability_training.fraction_stable": "NN-MD success, training complexes, 600 K",
        "stability_held_out.fraction_stable": "NN-MD success, held-out frameworks, 600 K",
        "stability_held_out_900K.fraction_stable": "NN-MD success, held-out frameworks, 900 K"}
TARGET = {"stability_held_out.fraction_stable": (">=", 0.97)}
# the paper's zeolite model ran 80 % of its MD successfully before any added data: a lower
# target taken from the paper (not from these runs) that a 40-label budget can resolve
TARGETS = {"(a) the paper's target, 97 %": TARGET,
           "(b) the paper's starting point, 80 %": {"stability_held_out.fraction_stable":
                                                    (">=", 0.8)}}


def choose_complexes(data: Path, max_atoms: int, frameworks: int, per_framework: int,
                     held_out_frameworks: int, per_held_out: int):
    """(training, held_out): lists of (entry id, host, guest, ase.Atoms). Frameworks with at
    least one cell of <= ``max_atoms`` atoms, ordered by how many such cells they have: the
    first ``frameworks`` give ``per_framework`` training complexes each, the next
    ``held_out_frameworks`` (never seen in training) ``per_held_out`` held-out complexes
    each; within a framework the smallest cells with distinct guests come first."""
    import ase.io

    by_host: dict[str, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in json.loads(data.read_text()):
            atoms = ase.io.read(io.StringIO(e["cif"]), format="cif")
            if len(atoms) <= max_atoms:
                by_host.setdefault(e["host"], []).append((e["id"], e["host"], e["guest"],
                                                          atoms))
    hosts = sorted(by_host, key=lambda h: (-len(by_host[h]), h))
    if len(hosts) < frameworks + held_out_frameworks:
        raise SystemExit(f"{data}: only {len(hosts)} frameworks have cells of <= {max_atoms} "
                         f"atoms, {frameworks} + {held_out_frameworks} asked for")

    def ordered(h: str) -> list:
        """Complexes of framework h, smallest first, distinct guests before repeats."""
        seen, distinct, rest = set(), [], []
        for t in sorted(by_host[h], key=lambda t: (len(t[3]), t[0])):
            (rest if t[2] in seen else distinct).append(t)
            seen.add(t[2])
        return distinct + rest

    training = [t for h in hosts[:frameworks] for t in ordered(h)[:per_framework]]
    held_out = [t for h in hosts[frameworks:frameworks + held_out_frameworks]
                for t in ordered(h)[:per_held_out]]
    return training, held_out


def initial_frames(job) -> list:
    """Oracle Langevin MD frames of one complex (in a worker)."""
    from advsample.initial_data import oracle_md
    from advsample.oracles import make_oracle

    atoms, spec, frames, temperature, seed = job
    return oracle_md(atoms, make_oracle(spec), temperature, steps=10 * (frames - 1),
                     interval=10, seed=seed)


def make_reference(ref: Path, args, config: dict) -> None:
    """Start structures, subset.json and initial data in ``ref`` (once)."""
    import ase.io

    from advsample.config import parse_config

    if (ref / "initial.extxyz").exists():
        return
    training, held_out = choose_complexes(args.data.resolve(), args.max_atoms,
                                          args.frameworks, args.per_framework,
                                          args.held_out_frameworks, args.per_held_out)
    ase.io.write(ref / "train_starts.extxyz", [t[3] for t in training], format="extxyz")
    ase.io.write(ref / "held_out.extxyz", [t[3] for t in held_out], format="extxyz")
    subset = {name: [{"id": t[0], "host": t[1], "guest": t[2], "atoms": len(t[3])}
                     for t in group]
              for name, group in (("training", training), ("held_out", held_out))}
    subset["initial"] = {"frames": args.initial_frames,
                         "temperature_K": args.initial_temperature}
    (ref / "subset.json").write_text(json.dumps(subset, indent=1))
    spec = parse_config(method_config(config)).oracle.spec()
    jobs = [(t[3], spec, args.initial_frames, args.initial_temperature, k)
            for k, t in enumerate(training)]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")
                             ) as pool:
        frames = [f for chunk in pool.map(initial_frames, jobs) for f in chunk]
    ase.io.write(ref / "initial.tmp.extxyz", frames, format="extxyz")
    (ref / "initial.tmp.extxyz").replace(ref / "initial.extxyz")


def intro(subset: dict, config: dict) -> list[str]:
    """The document's first lines: complexes, initial data, NN-MD settings."""
    lines = ["# Zeolite host-guest complexes: NN-MD success vs labels (GFN1-xTB oracle)", ""]
    for group, title in (("training", "Training complexes"), ("held_out", "Held out")):
        lines += [f"{title}: " + ", ".join(f"{c['host']}/{c['guest']} ({c['atoms']} at.)"
                                           for c in subset[group]), ""]
    init = subset.get("initial", {})
    tests = [f"{e['name']}: {e['runs']} runs per complex, {e['steps']} steps of "
             f"{e['timestep_fs']:g} fs at {e['temperature_K']:g} K"
             + (f", every {e['every']} generations and the last" if e.get("every") else "")
             for e in config["evaluate"] if e["type"] == "stability"]
    return lines + [
        f"Initial data: {init.get('frames', '?')} frames of {init.get('temperature_K', 0):g} K "
        f"GFN1-xTB MD per training complex. NN-MD tests ({'; '.join(tests)}); success = "
        "fraction of runs with no contact < 0.5 Å and no starting bond stretched past 1.5x."]


def by_complex(results: dict, subset: dict, test: str = "stability_held_out",
               group: str = "held_out") -> list[str]:
    """Document lines: per method and evaluated generation, the successful runs of ``test``
    out of those run, per start complex of ``subset[group]`` (summed over the repeats
    evaluated there, from "fraction_stable_per_start"), and the failures by culprit."""
    names = [f"{c['host']}/{c['guest']}" for c in subset.get(group, [])]
    lines = [f"## {KEYS[f'{test}.fraction_stable']}: successful runs per complex", "",
             "Summed over the repeats evaluated at that generation (runs per complex = "
             "repeats x runs per start); failures by culprit: the first check a failed run "
             "broke (a bond named by its elements).", "",
             "| method | generation (labels added) | repeats | " + " | ".join(names)
             + " | failures by culprit |", "|---" * (4 + len(names)) + "|"]
    for method, histories in results.items():
        rows: dict[int, list[dict]] = {}
        for history in histories:
            for row in history:
                if "fraction_stable_per_start" in (row.get(test) or {}):
                    rows.setdefault(int(row["generation"]), []).append(row)
        for generation, at in sorted(rows.items()):
            ok, runs, culprits = [0] * len(names), [0] * len(names), {}
            for row in at:
                result = row[test]
                per_start = result["fraction_stable_per_start"]
                if len(per_start) != len(names):
                    raise ValueError(f"{method} generation {generation}: {len(per_start)} "
                                     f"starts in {test}, {len(names)} {group} complexes")
                each = result["runs"] // len(per_start)
                for k, fraction in enumerate(per_start):
                    ok[k] += round(fraction * each)
                    runs[k] += each
                for culprit, n in (result.get("failures_by_culprit") or {}).items():
                    culprits[culprit] = culprits.get(culprit, 0) + n
            labels = ", ".join(str(int(r["labels_added"])) for r in at)
            failed = ", ".join(f"{c.removeprefix('bond broken ')} {n}"
                               for c, n in sorted(culprits.items(), key=lambda c: -c[1]))
            lines.append(f"| {method} | {generation} ({labels}) | {len(at)} | "
                         + " | ".join(f"{o}/{r}" for o, r in zip(ok, runs))
                         + f" | {failed or '–'} |")
    return lines + [""]


def oracle_md_errors(methods: list[str], work_dir: Path, subset: dict, out: Path | None = None,
                     every: int = 20) -> list[str]:
    """Document lines: force and energy errors of each loop's committees (the generations
    with a held-out NN-MD test) on GFN1-xTB MD of held-out complexes, every ``every``-th
    frame of the 600 K trajectories benchmarks/zeolites_judge.py wrote to <work dir>/judge/
    (none there: no lines; every 20th of frames 5 fs apart: 100 fs apart). Stability says
    whether NN-MD stays in one piece, this whether its forces are right near thermal
    geometries of frameworks never trained on. Energy errors are split in two: each
    complex's mean error (an offset, which moves no atom but shifts the complex against
    others, e.g. a binding energy) and the rest (relative energies along the trajectory,
    what the dynamics feels). A committee file met twice (generation 0, shared by the
    methods of a repeat) is evaluated once. ``out``: a JSON file for the numbers, per
    method, repeat and generation."""
    import hashlib

    import numpy as np
    import torch

    from advsample.committee import Committee
    from advsample.evaluators.predictions import predict
    from advsample.evaluators.test_set import load_test_set
    from advsample.structures import Batch

    files = sorted((work_dir / "judge").glob("held_out_*_600K_*steps.extxyz"))
    if not files:
        return []
    torch.set_num_threads(1)
    groups, names = [], []
    for f in files:
        k = int(f.name.split("_")[2])
        frames = load_test_set(f)[::every]
        groups.append((Batch.from_atoms(frames), len(frames[0]),
                       np.array([a.get_potential_energy() for a in frames]),
                       np.concatenate([a.get_forces() for a in frames])))
        names.append(f"{subset['held_out'][k]['host']}/{subset['held_out'][k]['guest']}")

    def errors(committee) -> tuple[float, float, float]:
        """Force-component RMSE (eV/Å), relative-energy RMSE and RMS offset (meV/atom)."""
        df, relative, offsets = [], [], []
        for batch, n_atoms, energy, forces in groups:
            pred = predict(committee, batch)
            de = 1e3 * (pred.energy - energy) / n_atoms
            df.append(pred.forces - forces)
            relative.append(de - de.mean())
            offsets.append(de.mean())
        return tuple(float(np.sqrt(np.mean(np.square(np.concatenate(x)))))
                     for x in (df, relative, [offsets]))

    lines = ["## Force errors on the oracle's MD of held-out complexes", "",
             f"GFN1-xTB Langevin MD at 600 K of {', '.join(names)} (held out; "
             f"`{common.relative(work_dir / 'judge')}`, from benchmarks/zeolites_judge.py), "
             f"every {every}th frame: {sum(len(g[2]) for g in groups)} structures. Per "
             "repeat (repeat 0, 1, ...), at the generations with a held-out NN-MD test: the "
             "committee mean's force-component RMSE, its energy error split into each "
             "complex's offset (the mean error: moves no atom, shifts the complex against "
             "others) and the rest (relative energies along the trajectory, what the "
             "dynamics feels).", "",
             "| method | generation (labels added) | force RMSE (eV/Å) | relative energy RMSE "
             "(meV/atom) | RMS energy offset (meV/atom) |", "|---|---|---|---|---|"]
    seen, table = {}, {}
    for method in methods:
        by_generation: dict[int, list] = {}
        for run in sorted((work_dir / method).glob("repeat_*")):
            for path in sorted(run.glob("generations/gen_*/committee.pt")):
                metrics = path.with_name("metrics.json")
                metrics = json.loads(metrics.read_text()) if metrics.exists() else {}
                if "stability_held_out" not in metrics:
                    continue
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest not in seen:
                    committee = Committee.load(path)
                    committee.compile = False
                    seen[digest] = errors(committee)
                generation = int(path.parent.name.removeprefix("gen_"))
                by_generation.setdefault(generation, []).append(
                    (metrics["labels_added"], seen[digest]))
                table.setdefault(method, {}).setdefault(run.name, {})[generation] = dict(
                    zip(("labels_added", "forces_rmse", "relative_energy_rmse_meV_atom",
                         "rms_energy_offset_meV_atom"),
                        (metrics["labels_added"], *seen[digest]), strict=True))
        for generation, at in sorted(by_generation.items()):
            cells = [", ".join(f"{e[i]:.{digits}f}" for _, e in at)
                     for i, digits in ((0, 3), (1, 1), (2, 1))]
            labels = ", ".join(str(int(n)) for n, _ in at)
            lines.append(f"| {method} | {generation} ({labels}) | " + " | ".join(cells) + " |")
    if out is not None:
        out.write_text(json.dumps({"complexes": names, "every": every,
                                   "frames": sum(len(g[2]) for g in groups),
                                   "errors": table}, indent=1))
        lines += ["", f"Numbers: `{out.name}`."]
    return lines + [""]


def main():
    p = parser(__doc__, "zeolites", ["attack", "md_300K", "md_600K"], repeats=1)
    p.add_argument("--data", type=Path, default=DATA, help="host-guest complexes (JSON)")
    p.add_argument("--max-atoms", type=int, default=60)
    p.add_argument("--frameworks", type=int, default=3, help="training frameworks")
    p.add_argument("--per-framework", type=int, default=4, help="complexes per training one")
    p.add_argument("--held-out-frameworks", type=int, default=4,
                   help="frameworks no training complex uses")
    p.add_argument("--per-held-out", type=int, default=2, help="complexes per held-out one")
    p.add_argument("--initial-frames", type=int, default=8, help="MD frames per complex")
    p.add_argument("--initial-temperature", type=float, default=300.0)
    args = prepare(p.parse_args())
    ref = args.work_dir / "reference"
    config = configure(FILES, ref, args.set)
    if not args.aggregate_only:
        make_reference(ref, args, config)
    subset = json.loads((ref / "subset.json").read_text()) if (ref / "subset.json").exists() \
        else {"training": [], "held_out": []}
    benchmark("zeolites", args, FILES, partial(intro, subset), KEYS, TARGET, frozenset(),
              targets=TARGETS, after=lambda results, config, out_dir: [
                  *by_complex(results, subset),
                  *by_complex(results, subset, "stability_held_out_900K"),
                  *by_complex(results, subset, "stability_training", "training"),
                  *oracle_md_errors(args.methods, args.work_dir, subset,
                                    out_dir / f"{args.doc_name}_oracle_md_errors.json")])


if __name__ == "__main__":
    main()
