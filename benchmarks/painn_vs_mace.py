"""PaiNN vs MACE committees: accuracy per label on the ammonia benchmark's data.

    python benchmarks/painn_vs_mace.py        # after benchmarks/ammonia.py; ~15 min, 2 cores

Takes the labelled structures of one attack loop of ``benchmarks/ammonia.py``
(runs/bench_ammonia/attack_0/labels.db), and for the training set of each generation trains
a PaiNN and a MACE committee (4 members, same training settings) from scratch, then
measures energy and force RMSE on the held-out 1000 K GFN2-xTB test set. Writes
docs/benchmarks/painn_vs_mace.{md,json} and a plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
MODELS = {
    "painn": {"features": 32, "interactions": 2, "cutoff": 4.0, "n_rbf": 16},
    "mace": {"elements": [1, 7], "cutoff": 4.0, "channels": 16, "max_L": 1, "max_ell": 2,
             "correlation": 2, "interactions": 2, "n_rbf": 8, "dtype": "float32"},
}


def train_and_test(job: dict) -> dict:
    import ase.io
    import torch

    torch.set_num_threads(1)
    from advsample.committee import Committee
    from advsample.runtime import tune_allocator
    from advsample.store import Store
    from advsample.structures import Batch
    from advsample.train import TrainConfig, evaluate, fit

    tune_allocator()
    atoms = Store(job["db"]).training_atoms(max_generation=job["generation"])
    data = Batch.from_atoms(atoms)
    test = Batch.from_atoms(ase.io.read(job["test"], ":"))
    committee = Committee.build(job["model"], 4, seed=job["seed"], **MODELS[job["model"]])
    start = time.time()
    result = fit(committee, data, TrainConfig(epochs=job["epochs"], lr=3e-3, batch_size=16,
                                              forces_weight=10.0, patience=60, lr_patience=20,
                                              seed=job["seed"]))
    err = evaluate(committee, test)
    return {"model": job["model"], "generation": job["generation"],
            "labels": data.n_structures, "train_seconds": time.time() - start,
            "val_forces_rmse": result.val_forces_rmse, "test_energy_rmse": err["energy_rmse"],
            "test_forces_rmse": err["forces_rmse"]}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench_ammonia" / "attack_0")
    p.add_argument("--test", type=Path,
                   default=ROOT / "runs" / "bench_ammonia" / "test_1000K.extxyz")
    p.add_argument("--generations", type=int, nargs="+", default=[0, 2, 4, 6])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=DOCS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [{"model": m, "generation": g, "db": str(args.run / "labels.db"),
             "test": str(args.test), "epochs": args.epochs, "seed": 0}
            for g in args.generations for m in MODELS]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(train_and_test, jobs))
    (args.out / "painn_vs_mace.json").write_text(json.dumps(
        {"settings": {"models": MODELS, **{k: str(v) for k, v in vars(args).items()}},
         "results": rows}, indent=1))
    lines = ["# PaiNN vs MACE committees on the NH3 attack-loop labels", "",
             f"Command: `{' '.join(['python benchmarks/painn_vs_mace.py', *argv])}`",
             "", f"Models: `{json.dumps(MODELS)}`; 4 members each, {args.epochs} epochs max, "
             "same split and loss. Test set: 1000 K GFN2-xTB MD (crosses the barrier).", "",
             "| generation | labels | model | test E RMSE (eV/atom) | test F RMSE (eV/Å) | "
             "training s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['generation']} | {r['labels']} | {r['model']} | "
                     f"{r['test_energy_rmse']:.4f} | {r['test_forces_rmse']:.3f} | "
                     f"{r['train_seconds']:.0f} |")
    lines += ["", "![per label](painn_vs_mace.png)", ""]
    (args.out / "painn_vs_mace.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for m in MODELS:
        pts = [(r["labels"], r["test_forces_rmse"]) for r in rows if r["model"] == m]
        ax.plot(*zip(*pts), "o-", label=m)
    ax.set_xlabel("training structures")
    ax.set_ylabel("force RMSE on the 1000 K test set (eV/Å)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "painn_vs_mace.png", dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
