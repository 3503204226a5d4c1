"""Reproduce the paper's Fig. 2 on the 2D double well: attacks vs random displacements.

    python benchmarks/double_well.py            # full run (5 loops per method, ~20 min, 2 cores)
    python benchmarks/double_well.py --loops 2 --generations 3   # quick look

Writes docs/benchmarks/double_well.{md,json} and PNG plots beside them. Settings follow
METHOD.md section 7 (800 uniform points kept below E = -2, committee of 5 MLPs, kT = 5,
7 generations, <= 20 new points each). The random baseline displaces the same seeds by
Gaussian noise whose scale is the median displacement of the points the attacks selected,
then goes through the same selection; uniform sampling over the box is a second reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
METRICS = ("rmse_grid", "rmse_low", "n_points", "sampled_energy")
MAP_GENERATIONS = (1, 3, 5, 7)


def base_config(args):
    from advsample.attack import AttackConfig
    from advsample.loop import AnalyticLoopConfig
    from advsample.select import SelectConfig
    from advsample.train import TrainConfig

    return AnalyticLoopConfig(
        generations=args.generations,
        committee_size=5,
        model={"width": 64, "depth": 3},
        kT=5.0,
        train=TrainConfig(epochs=args.epochs, lr=3e-3, patience=200, lr_patience=50),
        attack=AttackConfig(steps=args.steps, lr=0.01, init_scale=0.01, restarts=args.restarts,
                            remove_translation=False),
        select=SelectConfig(max_new=20, gate_percentile=80.0, min_separation=0.05),
    )


def one_loop(job):
    """Run one loop in a worker process; return its rows and, for the first loop, maps."""
    import torch

    torch.set_num_threads(1)
    from advsample.loop import run_analytic_loop

    cfg, with_maps = job
    t0 = time.time()
    rows = run_analytic_loop(cfg, keep_committees=with_maps)
    for row in rows:
        committee = row.pop("committee", None)
        if committee is not None and row["generation"] in MAP_GENERATIONS:
            row["map"] = committee_map(committee, 60).tolist()
        row.pop("training_points", None)
    return {"sampler": cfg.sampler, "seed": cfg.seed, "rows": rows, "seconds": time.time() - t0}


def committee_map(committee, resolution):
    """Committee-mean energy on a resolution × resolution grid over the box (flattened)."""
    import torch

    from advsample.oracles.analytic import DoubleWell2D
    from advsample.structures import Batch

    with torch.no_grad():
        points = Batch.from_points(DoubleWell2D().grid(resolution))
        return committee(points, forces=False).mean_energy.numpy()


def run_method(pool, cfg, loops):
    jobs = [(replace(cfg, seed=s), s == 0) for s in range(loops)]
    return list(pool.map(one_loop, jobs))


def summarise(results, generations):
    out = {"generation": list(range(1, generations + 1))}
    for key in METRICS:
        table = np.array([[r[key] for r in res["rows"]] for res in results], dtype=float)
        q25, med, q75 = _nan_safe(table)
        out[key] = {"median": med.tolist(), "q25": q25.tolist(), "q75": q75.tolist()}
    out["per_loop_final_rmse_grid"] = [res["rows"][-1]["rmse_grid"] for res in results]
    sampled = [e for res in results for r in res["rows"] for e in _true_energies(r["new_points"])]
    out["max_sampled_energy"] = float(max(sampled)) if sampled else float("nan")
    out["seconds_per_loop"] = float(np.mean([res["seconds"] for res in results]))
    return out


def _nan_safe(table):
    """Quartiles per column [3, G] ignoring NaN (generation 1 samples nothing)."""
    cols = []
    for col in table.T:
        col = col[~np.isnan(col)]
        cols.append(np.percentile(col, [25, 50, 75]) if len(col) else [np.nan] * 3)
    return np.array(cols).T


def _true_energies(points):
    from advsample.oracles.analytic import DoubleWell2D

    return DoubleWell2D().energy(np.array(points)).tolist() if points else []


def plot(results_by_method, summary, path_prefix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advsample.oracles.analytic import DoubleWell2D

    surface = DoubleWell2D()
    gens = summary["attack"]["generation"]
    colors = {"attack": "tab:red", "random": "tab:blue", "uniform": "tab:gray"}

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    labels = {"rmse_grid": "energy RMSE on the grid", "rmse_low": "RMSE where E_true < 0",
              "n_points": "training points", "sampled_energy": "median true E of new points"}
    for ax, key in zip(axes, METRICS):
        for method, s in summary.items():
            med, lo, hi = (np.array(s[key][k]) for k in ("median", "q25", "q75"))
            ax.plot(gens, med, "o-", color=colors[method], label=method)
            ax.fill_between(gens, lo, hi, color=colors[method], alpha=0.2)
        ax.set_xlabel("generation")
        ax.set_title(labels[key])
        if key.startswith("rmse"):
            ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(f"{path_prefix}_curves.png", dpi=110)
    plt.close(fig)

    grid = surface.grid(60)
    truth = surface.energy(grid).reshape(60, 60)
    ext = [*surface.box, *surface.box]
    levels = np.linspace(-4, 17.1, 22)
    for method in ("attack", "random"):
        rows = results_by_method[method][0]["rows"]
        fig, axes = plt.subplots(1, 5, figsize=(21, 4))
        axes[0].contourf(truth, levels=levels, extent=ext, origin="lower", cmap="viridis")
        axes[0].set_title("truth")
        training = np.array(_initial_training(results_by_method[method][0]))
        for ax, gen in zip(axes[1:], [g for g in MAP_GENERATIONS if g <= len(rows)]):
            row = rows[gen - 1]
            pred = np.clip(np.array(row["map"]).reshape(60, 60), levels[0], levels[-1])
            cs = ax.contourf(pred, levels=levels, extent=ext, origin="lower", cmap="viridis")
            seen = np.concatenate([training] + [np.array(r["new_points"]).reshape(-1, 2)
                                                for r in rows[:gen]])
            ax.scatter(seen[:, 0], seen[:, 1], s=4, c="white", label="training")
            new_next = np.array(rows[gen]["new_points"]) if gen < len(rows) else np.zeros((0, 2))
            if len(new_next):
                ax.scatter(new_next[:, 0], new_next[:, 1], s=18, c="red", marker="x",
                           label=f"{method} picks")
            ax.set_title(f"{method}, generation {gen}")
            ax.set_xlim(*surface.box)
            ax.set_ylim(*surface.box)
        axes[1].legend(loc="lower left", fontsize=7)
        fig.colorbar(cs, ax=axes, shrink=0.8, label="E")
        fig.savefig(f"{path_prefix}_maps_{method}.png", dpi=100)
        plt.close(fig)


def _initial_training(result):
    from advsample.loop import initial_points
    from advsample.oracles.analytic import DoubleWell2D

    return initial_points(DoubleWell2D(), 800, -2.0, result["seed"]).positions.numpy()


def write_markdown(summary, settings, path, command):
    lines = ["# 2D double well: adversarial attacks vs random sampling (paper Fig. 2)", "",
             f"Command: `{command}`", "",
             "Surface E(x, y) = 10x⁴ − 10x² + 2x + 4y⁴ on [−1.2, 1.2]²; initial data: 800 "
             "uniform points kept where E < −2 (left well only). Each generation retrains a "
             "fresh committee, samples from every training point, gates at the 80th "
             "percentile of the training set's force variance, de-duplicates and adds at most "
             "20 points. Generation 1 is the committee trained on the initial data.", "",
             "Settings: `" + json.dumps(settings) + "`", ""]
    for key, title in (("rmse_grid", "Energy RMSE on the 100×100 grid"),
                       ("rmse_low", "Energy RMSE on grid points with E_true < 0"),
                       ("n_points", "Training points"),
                       ("sampled_energy", "Median true energy of the points added")):
        lines += [f"## {title} (median [q25, q75] over loops)", "",
                  "| generation | " + " | ".join(summary) + " |",
                  "|---" * (len(summary) + 1) + "|"]
        for g in range(len(summary["attack"]["generation"])):
            cells = []
            for s in summary.values():
                m, lo, hi = (s[key][k][g] for k in ("median", "q25", "q75"))
                cells.append(f"{m:.3g} [{lo:.3g}, {hi:.3g}]")
            lines.append(f"| {g + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    a, r = summary["attack"], summary["random"]
    ratio = a["rmse_grid"]["median"][-1] / r["rmse_grid"]["median"][-1]
    lines += ["## Headline", "",
              f"- Final-generation median grid RMSE: attack {a['rmse_grid']['median'][-1]:.3g}, "
              f"random {r['rmse_grid']['median'][-1]:.3g} (ratio {ratio:.3f}; paper ≈ 1/3).",
              f"- Points used: attack {a['n_points']['median'][-1]:.0f}, random "
              f"{r['n_points']['median'][-1]:.0f}.",
              "- Final grid RMSE of every loop: " + "; ".join(
                  f"{m}: " + ", ".join(f"{v:.3g}" for v in s["per_loop_final_rmse_grid"])
                  for m, s in summary.items()),
              "- Highest true energy of any sampled point: " + "; ".join(
                  f"{m}: {s['max_sampled_energy']:.3g}" for m, s in summary.items())
              + " (box maximum 17.03).",
              "", "![learning curves](double_well_curves.png)", "",
              "![attack maps](double_well_maps_attack.png)", "",
              "![random maps](double_well_maps_random.png)", ""]
    path.write_text("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", type=int, default=5)
    p.add_argument("--generations", type=int, default=7)
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=DOCS)
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = base_config(args)
    t0 = time.time()
    results = {}
    with ProcessPoolExecutor(args.workers) as pool:
        results["attack"] = run_method(pool, replace(cfg, sampler="attack"), args.loops)
        disp = np.concatenate([np.array(r["new_displacements"]) for res in results["attack"]
                               for r in res["rows"]])
        scale = float(np.median(disp)) if len(disp) else 0.3
        results["random"] = run_method(pool, replace(cfg, sampler="random", random_scale=scale),
                                       args.loops)
        results["uniform"] = run_method(pool, replace(cfg, sampler="uniform"), args.loops)
    summary = {m: summarise(res, args.generations) for m, res in results.items()}
    settings = {**asdict(cfg), "loops": args.loops, "random_scale": scale,
                "wall_seconds": round(time.time() - t0, 1)}
    settings.pop("sampler")
    (args.out / "double_well.json").write_text(json.dumps(
        {"settings": settings, "methods": summary}, indent=1, default=str))
    command = "python benchmarks/double_well.py " + " ".join(argv or [])
    write_markdown(summary, settings, args.out / "double_well.md", command.strip())
    plot(results, summary, str(args.out / "double_well"))
    print((args.out / "double_well.md").read_text())


if __name__ == "__main__":
    main()
