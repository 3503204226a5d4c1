"""Wall time of the README's default run, in one process and on worker processes.

    python benchmarks/example_time.py --repeats 3      # ~8 min per repeat, idle 2 cores
    python benchmarks/example_time.py --aggregate-only # only rewrite the docs

Runs ``advsample run`` (a subprocess, as a user runs it; torch's default threads, no
OMP_NUM_THREADS) on examples/ammonia_xtb.yaml in two variants per repeat (seed = repeat):
*workers*: the example as shipped (executor: 2 local processes; ``train.parallel``: the
members trained in 2 groups at once; ``sampler.parallel``: the seeds attacked in 2 chunks at
once); *one process*: the same with ``executor.kind: inprocess`` and both switches off (the
example before this change: one process, torch's threads on every core). Recorded per run:
wall and CPU seconds (the run and its worker processes), the seconds of training and of
sampling, the final barrier error and validation errors, and, because each run validates on
its own new labels, both final committees on the other variant's new labels (a common
test). Each finished run is cached in runs/benchmarks/example_time/<variant>/repeat_<r>.json
(resumable); wall times need an otherwise idle machine. Writes
docs/benchmarks/example_time.{md,json}.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common as c
import numpy as np
import yaml

EXAMPLE = c.REPO / "examples" / "ammonia_xtb.yaml"
VARIANTS = {
    "workers": {},
    "one process": {"executor": {"kind": "inprocess"}, "train": {"parallel": False},
                    "sampler": {"parallel": False}},
}


def variant_config(variant: str, seed: int, work_dir: Path) -> Path:
    """The example with the variant's overrides and ``seed``, written into ``work_dir``."""
    config = yaml.safe_load(EXAMPLE.read_text())
    for section, values in VARIANTS[variant].items():
        config[section] = {**config.get(section, {}), **values}
    config["seed"] = seed
    path = work_dir / f"{variant.replace(' ', '_')}_seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_dir(work_dir: Path, variant: str, repeat: int) -> Path:
    """Where the variant's run of ``repeat`` lives."""
    return work_dir / variant.replace(" ", "_") / f"repeat_{repeat}"


def timed_run(variant: str, repeat: int, work_dir: Path) -> dict:
    """One fresh ``advsample run`` of the variant: wall and CPU seconds (the run and its
    worker processes)."""
    target = run_dir(work_dir, variant, repeat)
    shutil.rmtree(target, ignore_errors=True)
    config = variant_config(variant, repeat, work_dir)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "advsample.cli", "run", str(config), "--run-dir",
                    str(target), "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def final_numbers(target: Path) -> dict:
    """Seconds of training and sampling over the run, and the last generation's barrier
    error (eV) and validation errors (eV/Å, eV/atom)."""
    generations = target / "generations"
    final = json.loads(sorted(generations.glob("gen_*"))[-1].joinpath("metrics.json")
                       .read_text())
    sampling = [json.loads(p.read_text())["seconds"]
                for p in generations.glob("gen_*/sampling.json")]
    train = [json.loads(p.read_text())["train_seconds"]
             for p in generations.glob("gen_*/train.json")]
    return {"train_s": float(np.sum(train)), "sampling_s": float(np.sum(sampling)),
            "generation": final["generation"], "labels": final["labels"],
            "abs_barrier_error": final["path"]["abs_barrier_error"],
            "val_energy_rmse": final["val_energy_rmse"],
            "val_forces_rmse": final["val_forces_rmse"]}


def cross_errors(work_dir: Path, repeat: int) -> dict:
    """Each variant's final committee on the other variant's new labels (generations >= 1):
    energy (eV/atom) and force (eV/Å) RMSE of the committee mean."""
    from advsample.committee import Committee
    from advsample.store import Store
    from advsample.structures import Batch
    from advsample.train import evaluate

    dirs = {v: run_dir(work_dir, v, repeat) for v in VARIANTS}
    labels = {v: Batch.from_atoms([a for a in Store(d / "labels.db").training_atoms()
                                   if a.info["generation"] > 0]) for v, d in dirs.items()}
    out = {}
    for v, d in dirs.items():
        last = sorted((d / "generations").glob("gen_*"))[-1]
        committee = Committee.load(last / "committee.pt")
        (other,) = [w for w in VARIANTS if w != v]
        errors = evaluate(committee, labels[other])
        out[v] = {"on": other, "structures": labels[other].n_structures,
                  "energy_rmse": errors["energy_rmse"], "forces_rmse": errors["forces_rmse"]}
    return out


def main() -> None:
    parser = c.bench_args(__doc__.splitlines()[0], repeats=1)
    args = parser.parse_args()
    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    rows, runs = [], {}
    for r in range(args.repeats):
        for variant in VARIANTS:
            cached = run_dir(work_dir, variant, r).with_suffix(".json")
            if not cached.exists() and not args.aggregate_only:
                print(f"{variant}, repeat {r}: running", flush=True)
                cached.write_text(json.dumps(timed_run(variant, r, work_dir), indent=1))
            if cached.exists():
                runs.setdefault(variant, {})[r] = {
                    **json.loads(cached.read_text()),
                    **final_numbers(run_dir(work_dir, variant, r))}
        if all(r in runs.get(v, {}) for v in VARIANTS):
            for v, errors in cross_errors(work_dir, r).items():
                runs[v][r]["cross"] = errors
    for variant, by_repeat in runs.items():
        for r, x in sorted(by_repeat.items()):
            base = runs.get("one process", {}).get(r)
            ratio = f"{x['wall_s'] / base['wall_s']:.2f}" if base else "-"
            cross = x.get("cross")
            rows.append(
                f"| {variant} | {r} | {x['wall_s']:.0f} | {ratio} | {x['cpu_s']:.0f} | "
                f"{x['train_s']:.0f} | {x['sampling_s']:.0f} | {x['abs_barrier_error']:.4f} | "
                f"{x['val_forces_rmse']:.3f} / {x['val_energy_rmse']:.4f} | "
                + (f"{cross['forces_rmse']:.3f} / {cross['energy_rmse']:.4f} |" if cross
                   else "- |"))
    settings = {"example": c.relative(EXAMPLE), "variants": VARIANTS, "repeats": args.repeats,
                "cpus": os.cpu_count(),
                "command": f"python benchmarks/example_time.py --repeats {args.repeats}"}
    c.write_json("example_time", settings, {v: [by[r] for r in sorted(by)]
                                            for v, by in runs.items()}, {}, out_dir=args.out_dir)
    text = "\n".join([
        "# The README's default run: one process vs worker processes", "",
        f"`{settings['command']}` on {os.cpu_count()} cores: `advsample run "
        f"{settings['example']}` (5 generations, 4 PaiNN members, GFN2-xTB labels) as a user "
        "runs it, fresh run directory, torch's default threads. *workers*: the example as "
        "shipped (2 local worker processes; members trained in 2 groups and seeds attacked "
        "in 2 chunks at once: `train.parallel`, `sampler.parallel`); *one process*: the same "
        "with `executor.kind: inprocess` and both off. Seconds are wall time; CPU s include "
        "the workers. Validation errors are on each run's own new labels; *on the other's "
        "labels*: the final committee on the other variant's new labels (same seed).", "",
        "| variant | seed | wall s | wall / one process | CPU s | training s | sampling s | "
        "final barrier error (eV) | validation F (eV/Å) / E (eV/atom) | on the other's "
        "labels F / E |",
        "|---|---|---|---|---|---|---|---|---|---|", *rows, ""])
    c.write_markdown("example_time", text, out_dir=args.out_dir)
    print(text)


if __name__ == "__main__":
    main()
