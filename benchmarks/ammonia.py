"""NH3 with GFN2-xTB: adversarial attacks vs MD-based active learning vs random displacements.

    python benchmarks/ammonia.py                 # 3 repeats x 3 methods, ~1 h on 2 cores

Every method starts from the SAME initial data (GFN2-xTB MD at 300 K in one pyramidal well;
repeat r uses MD seed r) and adds at most ``--labels`` labels per generation. Per generation
and method: labels used, inversion-barrier error of the committee mean along the umbrella
path vs GFN2-xTB, energy/force RMSE on a held-out GFN2-xTB MD set at 1000 K (which crosses
the barrier), the fraction of stable 1000 K NN-MD runs, oracle time and wall time. Writes
docs/benchmarks/ammonia.{md,json} and PNG plots beside them; run directories go to
runs/bench_ammonia/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
METHODS = ("attack", "md", "random")


def base_config(args, method: str, repeat: int, initial: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "examples" / "ammonia_xtb.yaml").read_text())
    cfg["seed"] = repeat
    cfg["initial"] = {"file": str(initial)}
    cfg["loop"] = {"generations": args.generations}
    cfg["select"]["max_new"] = args.labels
    if args.epochs is not None:
        cfg["train"]["epochs"] = args.epochs
    cfg["sampler"]["type"] = method
    cfg["sampler"].update(random_scale=args.random_scale, md_temperature_K=args.md_temperature,
                          md_steps=args.md_steps, md_interval=args.md_interval)
    return cfg


def make_test_set(path: Path, frames: int, seed: int = 100) -> None:
    """GFN2-xTB Langevin MD at 1000 K from the xTB minimum, 4 independent trajectories."""
    import ase.io
    from ase.build import molecule

    from advsample.initial_data import oracle_md
    from advsample.oracles import make_oracle
    from advsample.umbrella import relaxed

    oracle = make_oracle({"type": "xtb", "method": "GFN2-xTB"})
    start = relaxed(molecule("NH3"), oracle.calculator())
    out = []
    for k in range(4):
        out += oracle_md(start, oracle, 1000.0, steps=20 * (frames // 4), interval=20,
                         seed=seed + k)[1:]
    ase.io.write(path, out, format="extxyz")


def make_initial(path: Path, seed: int) -> None:
    import ase.io
    from ase.build import molecule

    from advsample.initial_data import oracle_md
    from advsample.oracles import make_oracle
    from advsample.umbrella import relaxed

    oracle = make_oracle({"type": "xtb", "method": "GFN2-xTB"})
    start = relaxed(molecule("NH3"), oracle.calculator())
    ase.io.write(path, oracle_md(start, oracle, 300.0, steps=20 * 39, interval=20, seed=seed),
                 format="extxyz")


def run_one(job: dict) -> dict:
    """Run one loop and evaluate every generation's committee (in a worker process)."""
    import torch

    torch.set_num_threads(1)
    import ase.io
    from ase import Atoms

    from advsample.committee import Committee
    from advsample.config import parse_config
    from advsample.run import ActiveLearning
    from advsample.runtime import tune_allocator
    from advsample.stability import stability_test
    from advsample.structures import Batch
    from advsample.train import evaluate

    tune_allocator()
    t0 = time.time()
    run_dir = Path(job["run_dir"])
    if (run_dir / "result.json").exists():  # finished and evaluated by an earlier call
        return json.loads((run_dir / "result.json").read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(job["config"]))
    reference = json.loads(Path(job["reference"]).read_text())
    (run_dir / "reference.json").write_text(json.dumps(reference))
    al = ActiveLearning(parse_config(job["config"], str(run_dir / "config.yaml")), run_dir,
                        progress=False)
    if job.get("evaluate_only"):  # a loop cut short: evaluate the generations it finished
        done = sorted(run_dir.glob("generations/gen_*/metrics.json"))
        state = {"generation": len(done) - 1, "reason": f"cut short after {len(done) - 1} "
                 "generations (benchmark time limit)"}
    else:
        state = al.run()
    loop_seconds = time.time() - t0
    test = Batch.from_atoms(ase.io.read(job["test_set"], ":"))
    start = Atoms(reference["numbers"], positions=reference["positions"][0])  # the minimum
    starts = Batch.from_atoms([start] * job["stability_runs"], labels=False)
    rows = al.store.rows()
    out = {"method": job["method"], "repeat": job["repeat"], "generation": [], "labels": [],
           "barrier_error_eV": [], "energy_rmse_eV_atom": [], "force_rmse_eV_A": [],
           "stable_fraction": [], "oracle_seconds": [], "stop": state["reason"]}
    for g in range(state["generation"] + 1):
        committee = Committee.load(al.checkpoint(g))
        metrics = json.loads((al.generation_dir(g) / "metrics.json").read_text())
        err = evaluate(committee, test)
        stab = stability_test(committee, starts, temperature_K=1000.0,
                              steps=job["stability_steps"], dt_fs=0.5, seed=g, progress=False)
        out["generation"].append(g)
        out["labels"].append(sum(1 for r in rows if r["status"] == "ok" and
                                 0 < r["generation"] <= g))
        out["barrier_error_eV"].append(metrics["barrier_error"])
        out["energy_rmse_eV_atom"].append(err["energy_rmse"])
        out["force_rmse_eV_A"].append(err["forces_rmse"])
        out["stable_fraction"].append(stab.fraction_stable)
        out["oracle_seconds"].append(sum(r["seconds"] or 0.0 for r in rows
                                         if 0 < r["generation"] <= g))
    out["loop_seconds"] = loop_seconds
    out["wall_seconds"] = time.time() - t0
    out["label_positions"] = _label_positions(al)
    if not job.get("evaluate_only"):  # a cut-short loop stays open for a later run
        (run_dir / "result.json").write_text(json.dumps(out))
    return out


def _label_positions(al) -> list[list[float]]:
    """[umbrella coordinate (Å), energy above the lowest label (eV), generation] per label."""
    from advsample.umbrella import umbrella_coordinate

    atoms = al.store.training_atoms()
    e0 = min(a.get_potential_energy() for a in atoms)
    return [[float(umbrella_coordinate(a.positions)), a.get_potential_energy() - e0,
             a.info["generation"]] for a in atoms]


def aggregate(results: list[dict]) -> dict:
    """Median (and quartiles) over repeats, per method and generation."""
    keys = ("labels", "barrier_error_eV", "energy_rmse_eV_atom", "force_rmse_eV_A",
            "stable_fraction", "oracle_seconds")
    methods = {}
    for m in METHODS:
        runs = [r for r in results if r["method"] == m]
        if not runs:
            continue
        n = min(len(r["generation"]) for r in runs)
        entry = {"generation": list(range(n))}
        for k in keys:
            table = np.array([r[k][:n] for r in runs], dtype=float)
            if k == "barrier_error_eV":
                table = np.abs(table)
            entry[k] = np.median(table, axis=0).tolist()
            entry[k + "_q25"] = np.percentile(table, 25, axis=0).tolist()
            entry[k + "_q75"] = np.percentile(table, 75, axis=0).tolist()
        entry["wall_seconds"] = float(np.median([r["wall_seconds"] for r in runs]))
        entry["stops"] = [r["stop"] for r in runs]
        methods[m] = entry
    return methods


def labels_to_reach(entry: dict, barrier: float = 0.02, stable: float = 0.97):
    for k, lab in enumerate(entry["labels"]):
        if entry["barrier_error_eV"][k] <= barrier and entry["stable_fraction"][k] >= stable:
            return lab
    return None


def plot(methods: dict, results: list[dict], prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"attack": "tab:red", "md": "tab:green", "random": "tab:blue"}
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, key, title in zip(axes, ("barrier_error_eV", "force_rmse_eV_A",
                                     "energy_rmse_eV_atom", "stable_fraction"),
                              ("|barrier error| (eV)", "force RMSE, 1000 K test (eV/Å)",
                               "energy RMSE, 1000 K test (eV/atom)",
                               "stable 1000 K NN-MD runs")):
        for m, e in methods.items():
            ax.plot(e["labels"], e[key], "o-", color=colors[m], label=m)
            ax.fill_between(e["labels"], e[key + "_q25"], e[key + "_q75"], color=colors[m],
                            alpha=0.2)
        ax.set_xlabel("labels added")
        ax.set_title(title)
        if key != "stable_fraction":
            ax.set_yscale("log")
    axes[0].axhline(0.02, color="k", ls=":")
    axes[3].axhline(0.97, color="k", ls=":")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(f"{prefix}_curves.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), sharey=True)
    for ax, m in zip(np.atleast_1d(axes), methods):
        pts = np.array(next(r for r in results if r["method"] == m)["label_positions"])
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=pts[:, 2], cmap="viridis", s=10)
        ax.set_title(f"{m}: labels (repeat 0)")
        ax.set_xlabel("umbrella coordinate h (Å)")
        ax.set_yscale("symlog", linthresh=0.5)
    np.atleast_1d(axes)[0].set_ylabel("GFN2-xTB energy above lowest label (eV)")
    fig.colorbar(sc, ax=axes, label="generation")
    fig.savefig(f"{prefix}_labels.png", dpi=100)
    plt.close(fig)


def write_markdown(methods: dict, settings: dict, path: Path, command: str, name: str) -> None:
    oracle = settings["config"]["oracle"]
    lines = [f"# NH3 inversion ({json.dumps(oracle)}): attack vs MD-based AL vs random", "",
             f"Command: `{command}`", "", "Settings: `" + json.dumps(settings) + "`", "",
             "Medians over repeats (|barrier error| uses absolute values). Generation 0 is the "
             "committee trained on the initial data only.", ""]
    for m, e in methods.items():
        lines += [f"## {m}", "", "| generation | labels | abs. barrier error (eV) | force RMSE "
                  "(eV/Å) | energy RMSE (eV/atom) | stable fraction | oracle s |",
                  "|---|---|---|---|---|---|---|"]
        for k, g in enumerate(e["generation"]):
            lines.append(f"| {g} | {e['labels'][k]:.0f} | {e['barrier_error_eV'][k]:.4f} | "
                         f"{e['force_rmse_eV_A'][k]:.3f} | {e['energy_rmse_eV_atom'][k]:.4f} |"
                         f" {e['stable_fraction'][k]:.2f} | {e['oracle_seconds'][k]:.1f} |")
        lines += ["", f"Median wall time per loop (incl. evaluation): {e['wall_seconds']:.0f} s;"
                  f" stops: {', '.join(e['stops'])}.", ""]
    lines += ["## Labels needed for |barrier error| <= 0.02 eV and >= 97 % stable runs", ""]
    for m, e in methods.items():
        n = labels_to_reach(e)
        lines.append(f"- {m}: {n if n is not None else 'not reached'}")
    lines += ["", f"![curves]({name}_curves.png)", "", f"![labels]({name}_labels.png)", ""]
    path.write_text("\n".join(lines))


def reference_file(work: Path, config: dict) -> Path:
    """The oracle's inversion path, computed once for all loops (reference.json)."""
    from advsample.config import parse_config
    from advsample.run import ActiveLearning

    path = work / "reference.json"
    if not path.exists():
        ActiveLearning(parse_config(config), work / "reference_run", progress=False
                       ).reference_path()
        (work / "reference_run" / "reference.json").replace(path)
    return path


def run_benchmark(name: str, args, initial_files: list[Path], test_set: Path,
                  configure=None) -> None:
    """Run every method x repeat from ``initial_files[r]``, evaluate, write docs/<name>.*."""
    t0 = time.time()
    jobs = []
    for r, initial in enumerate(initial_files):
        for m in args.methods:
            config = base_config(args, m, r, initial)
            if configure is not None:
                configure(config)
            jobs.append({"method": m, "repeat": r, "config": config,
                         "run_dir": str(args.work / f"{m}_{r}"), "test_set": str(test_set),
                         "stability_runs": args.stability_runs,
                         "stability_steps": args.stability_steps})
    ref = reference_file(args.work, jobs[0]["config"])
    for job in jobs:
        job["reference"] = str(ref)
    if args.aggregate_only:  # write the documents from the loops finished so far
        results = [json.loads((Path(j["run_dir"]) / "result.json").read_text()) for j in jobs
                   if (Path(j["run_dir"]) / "result.json").exists()]
        unfinished = [dict(j, evaluate_only=True) for j in jobs
                      if not (Path(j["run_dir"]) / "result.json").exists()
                      and j["method"] not in {r["method"] for r in results}
                      and (Path(j["run_dir"]) / "generations" / "gen_000" / "metrics.json"
                           ).exists()]
        if unfinished:  # a method with no finished loop: evaluate its partial loops
            with ProcessPoolExecutor(args.workers) as pool:
                results += list(pool.map(run_one, unfinished))
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(run_one, jobs))
    methods = aggregate(results)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["wall_seconds"] = round(time.time() - t0, 1)
    settings["config"] = jobs[0]["config"]
    settings["loops_evaluated"] = [f"{r['method']}_{r['repeat']}" for r in results]
    (args.out / f"{name}.json").write_text(json.dumps(
        {"settings": settings, "methods": methods,
         "runs": [{k: v for k, v in r.items() if k != "label_positions"} for r in results]},
        indent=1))
    command = (f"python benchmarks/{name}.py " + " ".join(args.argv or [])).strip()
    write_markdown(methods, settings, args.out / f"{name}.md", command, name)
    plot(methods, results, str(args.out / name))
    print((args.out / f"{name}.md").read_text())


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--labels", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--stability-runs", type=int, default=32)
    p.add_argument("--stability-steps", type=int, default=4000, help="0.5 fs steps")
    p.add_argument("--test-frames", type=int, default=200)
    p.add_argument("--random-scale", type=float, default=0.15)
    p.add_argument("--md-temperature", type=float, default=1000.0)
    p.add_argument("--md-steps", type=int, default=2000)
    p.add_argument("--md-interval", type=int, default=20)
    p.add_argument("--epochs", type=int, default=None, help="override the example's epochs")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=DOCS)
    p.add_argument("--aggregate-only", action="store_true",
                   help="only write the documents from loops already evaluated")
    return p


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_ammonia")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    args.argv = argv
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    test_set = args.work / "test_1000K.extxyz"
    if not test_set.exists():
        make_test_set(test_set, args.test_frames)
    initial_files = []
    for r in range(args.repeats):
        initial = args.work / f"initial_{r}.extxyz"
        if not initial.exists():
            make_initial(initial, r)
        initial_files.append(initial)
    run_benchmark("ammonia", args, initial_files, test_set)


if __name__ == "__main__":
    main()
