"""Zeolite host-guest complexes (the paper's headline): NN-MD success vs labels added,
adversarial attacks vs MD-based active learning, GFN1-xTB (tblite, periodic) as the oracle.

    python benchmarks/zeolites.py              # defaults below; see --help to scale down

Subset of ../shared/data/zeolites_host_guest.json that 2 CPU cores can handle: cells of
<= 60 atoms from the frameworks with most such cells (SOD, SBN, THO by default), up to
``--per-framework`` complexes each for training (distinct guests first) and one more per
framework held out (never labelled or used as a seed). Initial data: short GFN1-xTB
Langevin MD of each training complex. Then, from the same initial committee, MD-based AL
and attacks add labels (each generation's committee warm-starts from the previous one);
after each generation the committee runs NN-MD at ``--temperature`` from every training and
held-out complex; a run succeeds when no atom pair comes closer than
0.5 Å and no bond of the starting connectivity (framework Si-O and guest bonds alike)
stretches past 1.5x. Writes docs/benchmarks/zeolites.{md,json} and a plot; run directories
go to runs/bench_zeolites/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
DATA = ROOT.parent / "shared" / "data" / "zeolites_host_guest.json"
ORACLE = {"type": "xtb", "method": "GFN1-xTB"}


def choose_complexes(data: Path, max_atoms: int, frameworks: int, per_framework: int):
    """(training, held_out): lists of (entry id, host, guest, ase.Atoms)."""
    import ase.io

    entries = json.loads(data.read_text())
    by_host: dict[str, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in entries:
            atoms = ase.io.read(io.StringIO(e["cif"]), format="cif")
            if len(atoms) <= max_atoms:
                by_host.setdefault(e["host"], []).append((e["id"], e["host"], e["guest"],
                                                          atoms))
    hosts = sorted(by_host, key=lambda h: -len(by_host[h]))[:frameworks]
    training, held_out = [], []
    for h in hosts:
        items = sorted(by_host[h], key=lambda t: (len(t[3]), t[0]))
        seen, distinct, rest = set(), [], []
        for t in items:
            (rest if t[2] in seen else distinct).append(t)
            seen.add(t[2])
        ordered = distinct + rest
        held_out.append(ordered[min(per_framework, len(ordered) - 1)])
        training += [t for t in ordered[:per_framework] if t is not held_out[-1]]
    return training, held_out


def initial_frames(job) -> list:
    from advsample.initial_data import oracle_md
    from advsample.oracles import make_oracle

    atoms, frames, interval, temperature, seed = job
    return oracle_md(atoms, make_oracle(ORACLE), temperature, steps=interval * (frames - 1),
                     interval=interval, seed=seed)


def run_method(job: dict) -> dict:
    """One loop (attack or md) and the NN-MD success of every generation's committee."""
    import ase.io
    import torch

    torch.set_num_threads(1)
    from advsample.committee import Committee
    from advsample.config import parse_config
    from advsample.run import ActiveLearning
    from advsample.runtime import tune_allocator
    from advsample.stability import stability_test
    from advsample.structures import Batch

    tune_allocator()
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(job["config"]))
    al = ActiveLearning(parse_config(job["config"]), run_dir, progress=False)
    state = al.run()
    train_starts = Batch.from_atoms(ase.io.read(job["train_starts"], ":"), labels=False)
    held_starts = Batch.from_atoms(ase.io.read(job["held_starts"], ":"), labels=False)
    rows = al.store.rows()
    out = {"method": job["method"], "labels": [], "success_train": [], "success_heldout": [],
           "generation": [], "stop": state["reason"]}
    for g in range(state["generation"] + 1):
        committee = Committee.load(al.checkpoint(g))
        res = [stability_test(committee, starts, temperature_K=job["temperature"],
                              steps=job["steps"], runs_per_start=job["runs"], seed=g,
                              progress=False)
               for starts in (train_starts, held_starts)]
        out["generation"].append(g)
        out["labels"].append(sum(1 for r in rows if r["status"] == "ok" and
                                 0 < r["generation"] <= g))
        out["success_train"].append(res[0].fraction_stable)
        out["success_heldout"].append(res[1].fraction_stable)
    return out


def loop_config(args, method: str, initial: Path, system: Path) -> dict:
    return {
        "seed": 0,
        "system": {"file": str(system)},
        "initial": {"file": str(initial)},
        "oracle": dict(ORACLE),
        "committee": {"model": "painn", "size": 4, "hyperparameters": {
            "features": 32, "interactions": 2, "cutoff": 4.5, "n_rbf": 16}},
        "train": {"epochs": args.epochs, "batch_size": 8, "forces_weight": 10.0,
                  "patience": 40, "lr_patience": 15, "warm_start": True},
        "sampler": {"type": method, "kT": args.kT, "steps": args.attack_steps,
                    "restarts": 1, "seeds": args.seeds, "max_displacement": 0.3,
                    "min_distance": 0.8, "md_temperature_K": args.temperature,
                    "md_steps": args.md_steps, "md_interval": 20},
        "select": {"max_new": args.labels, "gate_percentile": 80, "min_separation": 0.02},
        "loop": {"generations": args.generations},
    }


def main(argv=None):
    import ase.io

    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--max-atoms", type=int, default=60)
    p.add_argument("--frameworks", type=int, default=3)
    p.add_argument("--per-framework", type=int, default=4)
    p.add_argument("--initial-frames", type=int, default=8)
    p.add_argument("--initial-temperature", type=float, default=300.0)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--labels", type=int, default=10)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--kT", type=float, default=0.05)
    p.add_argument("--attack-steps", type=int, default=60)
    p.add_argument("--md-steps", type=int, default=500)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--temperature", type=float, default=600.0)
    p.add_argument("--steps", type=int, default=1000, help="0.5 fs NN-MD steps per run")
    p.add_argument("--runs", type=int, default=2, help="NN-MD runs per complex")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_zeolites")
    p.add_argument("--out", type=Path, default=DOCS)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    training, held_out = choose_complexes(args.data, args.max_atoms, args.frameworks,
                                          args.per_framework)
    train_starts, held_starts = args.work / "train_starts.extxyz", args.work / "held.extxyz"
    ase.io.write(train_starts, [t[3] for t in training], format="extxyz")
    ase.io.write(held_starts, [t[3] for t in held_out], format="extxyz")
    initial = args.work / "initial.extxyz"
    if not initial.exists():
        jobs = [(t[3], args.initial_frames, 10, args.initial_temperature, k)
                for k, t in enumerate(training)]
        with ProcessPoolExecutor(args.workers) as pool:
            frames = [f for chunk in pool.map(initial_frames, jobs) for f in chunk]
        ase.io.write(initial, frames, format="extxyz")
    jobs = [{"method": m, "config": loop_config(args, m, initial, train_starts),
             "run_dir": str(args.work / m), "train_starts": str(train_starts),
             "held_starts": str(held_starts), "temperature": args.temperature,
             "steps": args.steps, "runs": args.runs} for m in ("attack", "md")]
    with ProcessPoolExecutor(args.workers) as pool:
        results = {r["method"]: r for r in pool.map(run_method, jobs)}
    subset = {"training": [{"id": t[0], "host": t[1], "guest": t[2], "atoms": len(t[3])}
                           for t in training],
              "held_out": [{"id": t[0], "host": t[1], "guest": t[2], "atoms": len(t[3])}
                           for t in held_out]}
    settings = {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "subset": subset, "wall_seconds": round(time.time() - t0, 1)}
    (args.out / "zeolites.json").write_text(json.dumps(
        {"settings": settings, "methods": results}, indent=1))
    write_report(results, settings, args.out, " ".join(["python benchmarks/zeolites.py",
                                                         *argv]))


def write_report(results: dict, settings: dict, out: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Zeolite host-guest complexes: NN-MD success vs labels (GFN1-xTB oracle)", "",
             f"Command: `{command}`", "",
             "Training complexes: " + ", ".join(f"{c['host']}/{c['guest']} ({c['atoms']} at.)"
                                                for c in settings["subset"]["training"]),
             "", "Held out: " + ", ".join(f"{c['host']}/{c['guest']} ({c['atoms']} at.)"
                                          for c in settings["subset"]["held_out"]), "",
             f"NN-MD: {settings['runs']} runs per complex, {settings['steps']} steps of 0.5 fs "
             f"at {settings['temperature']:.0f} K; wall time {settings['wall_seconds']:.0f} s.",
             "", "| method | generation | labels | success (training) | success (held out) |",
             "|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, r in results.items():
        for k, g in enumerate(r["generation"]):
            lines.append(f"| {m} | {g} | {r['labels'][k]} | {r['success_train'][k]:.2f} | "
                         f"{r['success_heldout'][k]:.2f} |")
        big = m == "attack"  # larger hollow markers keep coinciding curves visible
        style = {"markersize": 10 if big else 5, "markerfacecolor": "none" if big else None}
        ax.plot(r["labels"], r["success_train"], "o-", label=f"{m}, training complexes",
                **style)
        ax.plot(r["labels"], r["success_heldout"], "s--", label=f"{m}, held out", **style)
    ax.set_xlabel("labels added")
    ax.set_ylabel("successful NN-MD runs")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "zeolites.png", dpi=100)
    plt.close(fig)
    lines += ["", "![success](zeolites.png)", ""]
    best = {m: next((r["labels"][k] for k in range(len(r["labels"]))
                     if min(r["success_train"][k], r["success_heldout"][k]) >= 0.97), None)
            for m, r in results.items()}
    lines.append("Labels to reach >= 97 % success on both sets: " + ", ".join(
        f"{m}: {v if v is not None else 'not reached'}" for m, v in best.items()))
    (out / "zeolites.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
