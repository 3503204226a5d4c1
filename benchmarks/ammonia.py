"""NH3 with GFN2-xTB: adversarial attacks vs MD-based active learning vs random displacements.

    python benchmarks/ammonia.py                      # 3 repeats x 3 methods, hours on 2 cores
    python benchmarks/ammonia.py --aggregate-only     # only rewrite the docs from the runs
    python benchmarks/ammonia.py --set loop.generations=2 --set evaluate.stability.runs=4 ...

Loop = examples/ammonia_xtb.yaml merged with benchmarks/configs/ammonia.yaml, seed = repeat,
sampler.type = method (``--set KEY=VALUE`` overrides any key). Repeat r of every method starts
from the same 300 K GFN2-xTB MD (seed r) and adds <= 20 labels per generation, judged by the
config's evaluators: inversion-barrier error (path), errors on a 1000 K GFN2-xTB MD test set
(test_set; made once in runs/benchmarks/ammonia/reference/), stable 1000 K NN-MD runs
(stability). Loops: runs/benchmarks/ammonia/<method>/repeat_<r>/ (resumable; history.json
once finished). Writes docs/benchmarks/ammonia.{md,json} and ammonia_curves.png. The
helpers below serve ammonia_dft.py and zeolites.py too.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from functools import partial
from pathlib import Path

import common
import yaml

EXAMPLE, CONFIGS = "examples/ammonia_xtb.yaml", "benchmarks/configs"
METHODS = ["attack", "md", "random"]
KEYS = {"path.abs_barrier_error": "abs. barrier error (eV)",
        "test_set.forces_rmse": "force RMSE, test set (eV/Å)",
        "test_set.energy_rmse": "energy RMSE, test set (eV/atom)",
        "stability.fraction_stable": "stable 1000 K NN-MD runs"}
TARGET = {"path.abs_barrier_error": ("<=", 0.02), "stability.fraction_stable": (">=", 0.97)}


def merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_key(config: dict, assignment: str) -> None:
    """Apply "a.b.c=value" (value parsed as YAML); in a list (evaluate) a part is an index or
    an evaluator's name (its type when it has none)."""
    key, value = assignment.split("=", 1)
    parts, node = key.split("."), config
    for i, part in enumerate(parts):
        if isinstance(node, list):
            part = next((j for j, e in enumerate(node)
                         if part in (str(j), e.get("name", e.get("type")))), None)
            if part is None:
                raise ValueError(f"--set {key}: {parts[i]!r} is not in the list")
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(value)
        else:
            node = node[part] if isinstance(node, list) else node.setdefault(part, {})


def configure(files: list[str], reference: Path, sets: list[str]) -> dict:
    """The run config: YAML ``files`` merged in order, "{reference}" made the repo-relative
    path of ``reference``, ``sets`` applied; validated."""
    from advsample.config import parse_config

    config = {}
    for f in files:
        config = merge(config, yaml.safe_load((common.REPO / f).read_text()))
    text = json.dumps(config).replace("{reference}", os.path.relpath(reference, common.REPO))
    config = json.loads(text)
    for s in sets:
        set_key(config, s)
    parse_config(config, " + ".join(files))
    return config


def run_loop(config: dict, seed: int, run_dir: Path) -> list[dict]:
    """One repeat: the loop of ``config`` with ``seed`` in ``run_dir`` (resumed when there);
    its history, each row with "labels_added" (labels beyond generation 0's)."""
    import logging

    import torch

    from advsample.run import resume
    from advsample.runtime import tune_allocator

    torch.set_num_threads(1)
    tune_allocator()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {run_dir.parent.name}/"
                        f"{run_dir.name}: %(message)s", datefmt="%H:%M:%S", force=True)
    if not (run_dir / "config.yaml").exists():
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "seed": seed},
                                                            sort_keys=False))
    al = resume(run_dir, progress=False)
    al.run()
    history = al.history()
    for row in history:
        row["labels_added"] = row["labels"] - history[0]["labels"]
    return history


def collect(methods: list[str], repeats: int, work_dir: Path) -> tuple[dict, list[str]]:
    """Per method the histories of its loops (history.json, else the generations evaluated so
    far: an unfinished loop, named in the list returned too)."""
    results, names = {}, []
    for m in methods:
        for k in range(repeats):
            run = work_dir / m / f"repeat_{k}"
            if (run / "history.json").exists():
                results.setdefault(m, []).append(json.loads((run / "history.json").read_text()))
            elif rows := [json.loads(f.read_text())
                          for f in sorted(run.glob("generations/gen_*/metrics.json"))]:
                results.setdefault(m, []).append(
                    [{**r, "labels_added": r["labels"] - rows[0]["labels"]} for r in rows])
                names.append(f"{m}/repeat_{k} ({len(rows)} generations)")
    return results, names


def benchmark(name: str, args, files: list[str], intro, keys: dict = KEYS,
              target: dict = TARGET, log: frozenset = frozenset(list(KEYS)[:3])) -> None:
    """Run (unless --aggregate-only) every method x repeat of the config ``files`` in
    ``args.work_dir``, then write <out dir>/<name>.{md,json} and <name>_curves.png; ``intro``:
    config -> the document's first lines (config: the first loop's as stored, if any)."""
    config = configure(files, args.work_dir / "reference", args.set)
    fns = {m: partial(run_loop, merge(config, {"sampler": {"type": m}})) for m in args.methods}
    if not args.aggregate_only:
        common.run_repeats(fns, args.repeats, args.work_dir, args.workers)
    results, partial_runs = collect(args.methods, args.repeats, args.work_dir)
    stored = args.work_dir / args.methods[0] / "repeat_0" / "config.yaml"
    config = yaml.safe_load(stored.read_text()) if stored.exists() else config
    command = " ".join(["python", f"benchmarks/{name}.py", *(
        os.path.relpath(a, common.REPO) if a.startswith("/") else a for a in sys.argv[1:])])
    settings = {"command": command, "config_files": files, "set": args.set,
                "methods": args.methods, "repeats": args.repeats, "unfinished": partial_runs,
                "config": config}
    summary = {"target": {k: list(v) for k, v in target.items()},
               "labels_to_target": common.target_summary(results, target, "labels_added")}
    common.write_json(name, settings, results, summary, args.out_dir)
    plot = common.plot_curves(results, keys, args.out_dir / f"{name}_curves.png",
                              "labels_added", log=log, targets={k: t for k, (_, t) in
                                                                target.items()},
                              xlabel="labels added")
    lines = [*intro(config), "", f"Command: `{command}`", "",
             f"Config: {' + '.join(f'`{f}`' for f in files)}"
             + (f", with {', '.join(f'`{s}`' for s in args.set)}" if args.set else "")
             + f"; seed = repeat; loops in `{common.relative(args.work_dir)}/<method>/"
             "repeat_<r>` (the JSON holds the first one's config). Medians over repeats "
             "with 90 % bootstrap intervals; generation 0 is the committee trained on the "
             "initial data only."
             + (f" Unfinished loops: {', '.join(partial_runs)}." if partial_runs else ""), "",
             f"## Labels added to reach {common.criteria_text(target)}", "",
             common.table_labels_to_target(results, target, "labels_added")]
    for key, title in keys.items():
        lines += [f"## {title}", "", common.table_by_generation(
            results, {"labels_added": "labels added", key: title}, {key: ".4g"},
            "labels_added")]
    lines += [f"![curves]({plot.name})", ""]
    print(common.write_markdown(name, "\n".join(lines), args.out_dir).read_text())


def parser(doc: str, name: str, methods: list[str], **defaults):
    """common.bench_args (2 workers by default) plus --methods and --set."""
    p = common.bench_args(doc.splitlines()[0], name, workers=2, **defaults)
    p.add_argument("--methods", nargs="+", default=methods, help="samplers (%(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. evaluate.stability.steps=50")
    return p


def prepare(args):
    """Absolute work/out dirs, the reference dir made, cwd the repo root (configs' paths)."""
    args.work_dir, args.out_dir = args.work_dir.resolve(), args.out_dir.resolve()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(common.REPO)
    (args.work_dir / "reference").mkdir(parents=True, exist_ok=True)
    return args


def make_test_set(path: Path, config: dict, frames: int, seed: int = 100) -> None:
    """GFN2-xTB Langevin MD at 1000 K from the relaxed minimum, 4 trajectories (once)."""
    import ase.io
    from ase.build import molecule

    from advsample.config import parse_config
    from advsample.initial_data import oracle_md
    from advsample.oracles import make_oracle
    from advsample.umbrella import relaxed

    oracle = make_oracle(parse_config(config).oracle.spec())
    start = relaxed(molecule("NH3"), oracle.calculator())
    out = [a for k in range(4) for a in oracle_md(start, oracle, 1000.0, steps=20 * (
        frames // 4), interval=20, seed=seed + k)[1:]]
    ase.io.write(path.with_suffix(".tmp.extxyz"), out, format="extxyz")
    path.with_suffix(".tmp.extxyz").replace(path)


def main():
    p = parser(__doc__, "ammonia", METHODS)
    p.add_argument("--test-frames", type=int, default=200, help="1000 K test set size")
    args = prepare(p.parse_args())
    files = [EXAMPLE, f"{CONFIGS}/ammonia.yaml"]
    test = args.work_dir / "reference" / "test_1000K.extxyz"
    if not args.aggregate_only and not test.exists():
        make_test_set(test, configure(files, test.parent, args.set), args.test_frames)
    intro = ["# NH3 inversion (GFN2-xTB): attack vs MD-based AL vs random displacements", "",
             "Initial data: 300 K GFN2-xTB MD in one pyramidal well (seed = repeat); test "
             "set: GFN2-xTB MD at 1000 K from the minimum (crosses the barrier)."]
    benchmark("ammonia", args, files, lambda config: intro)


if __name__ == "__main__":
    main()
