"""The paper's Fig. 2 on the 2D double well: attacks vs random displacements vs uniform points.

    python benchmarks/double_well.py                # 3 methods x 5 loops, 2 workers, 1-2 h
    python benchmarks/double_well.py --repeats 1 --generations 2 --epochs 100 --out-dir /tmp/dw

Each loop: examples/double_well.yaml (METHOD.md section 7) by the package's loop in
<work-dir>/<method>/repeat_<k>, seed k, resumable (other settings need another --work-dir).
Generation 1 = the committee on the initial data (paper counting: 7 generations = 6 sampling
rounds). random: Gaussian displacements, scale = the old run's median attack displacement;
uniform: uniform points in the box. Writes <out-dir>/double_well.{md,json},
double_well_curves.png, double_well_labels.png, double_well_maps_<method>.png (repeat 0).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from functools import partial
from pathlib import Path

import common as c
import numpy as np
import yaml

EXAMPLE = c.REPO / "examples" / "double_well.yaml"
METHODS = ("attack", "random", "uniform")
MAP_GENERATIONS = (1, 3, 5, 7)
NOTES = "(written by hand"  # a hand-written reading in the .md, kept by --aggregate-only
KEYS = {"grid.rmse_grid": "grid RMSE (whole box)", "grid.rmse_low": "grid RMSE where E < 0",
        "labels": "training points", "sampled_energy": "median true E of the points added"}


def loop_config(method: str, seed: int, s: dict) -> dict:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["seed"] = seed
    cfg["loop"]["generations"] = s["generations"] - 1
    cfg["train"]["epochs"] = s["epochs"]
    cfg["sampler"].update(type=method, steps=s["steps"], restarts=s["restarts"],
                          random_scale=s["random_scale"])
    return cfg


def run_loop(method: str, s: dict, seed: int, run_dir: Path) -> list[dict]:
    """One loop in ``run_dir`` (continued if it exists); its history in paper counting."""
    import torch

    from advsample.config import parse_config
    from advsample.run import build

    torch.set_num_threads(1)
    logging.basicConfig(format=f"%(asctime)s {method} {seed}: %(message)s", force=True)
    logging.getLogger("advsample").setLevel(logging.INFO)
    cfg, stored = loop_config(method, seed, s), Path(run_dir) / "config.yaml"
    if stored.exists() and yaml.safe_load(stored.read_text()) != cfg:
        raise ValueError(f"{c.relative(stored)} holds other settings; use another --work-dir")
    stored.write_text(yaml.safe_dump(cfg, sort_keys=False))
    al, t0 = build(parse_config(cfg, c.relative(stored)), run_dir, progress=False), time.time()
    al.run()
    return history(al, time.time() - t0)


def history(al, seconds: float) -> list[dict]:
    """al.history() with generation + 1 and, per generation, the points added: their true
    energies, largest |coordinate| and distance to the seed they came from."""
    atoms = al.store.training_atoms()
    xy = {a.info["store_id"]: a.positions[0, :2] for a in atoms}
    parent = {r["id"]: r["parent"] for r in al.store.rows(status="ok")}
    rows = []
    for m in al.history():
        g = m["generation"]
        new = [a for a in atoms if g > 0 and a.info["generation"] == g]
        e = [a.get_potential_energy() for a in new]
        pts = np.array([a.positions[0, :2] for a in new]).reshape(-1, 2)
        disp = [np.linalg.norm(xy[i] - xy[parent[i]]) for i in (a.info["store_id"] for a in new)
                if parent[i] in xy]
        nan = float("nan")
        rows.append({**m, "generation": g + 1, "loop_generation": g, "new_points": pts.tolist(),
                     "sampled_energy": float(np.median(e)) if e else nan,
                     "sampled_energy_max": float(max(e)) if e else nan,
                     "sampled_abs_max": float(np.abs(pts).max()) if len(pts) else nan,
                     "sampled_displacement": float(np.median(disp)) if disp else nan})
    rows[-1]["seconds"] = seconds
    return rows


def plot_maps(run_dir: Path, method: str, path: Path, gens: list[int]) -> None:
    """Committee mean energy (top) and log10 sigma^2_F (bottom) at paper generations ``gens``,
    with the training points (white) and the next generation's picks (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advsample.run import resume
    from advsample.structures import Batch
    from advsample.uncertainty import force_variance

    al = resume(run_dir, progress=False)
    surface, n = al.parts.oracle.surface, 80
    grid, ext, levels = surface.grid(n), [*surface.box, *surface.box], np.linspace(-4, 17.1, 22)
    atoms = al.store.training_atoms()
    fig, axes = plt.subplots(2, len(gens) + 1, figsize=(4.2 * (len(gens) + 1), 7.6),
                             squeeze=False)
    axes[0][0].contourf(surface.energy(grid).reshape(n, n), levels, extent=ext, cmap="viridis")
    axes[0][0].set_title("true energy")
    for col, gen in enumerate(gens, 1):
        committee = al.committee(gen - 1)
        batch = Batch.from_points(grid, dtype=next(committee.parameters()).dtype)
        out = committee(batch)
        var = force_variance(out.forces, batch.structure, batch.n_structures).detach().numpy()
        mean = np.clip(out.mean_energy.detach().numpy(), levels[0], levels[-1])
        seen = np.array([a.positions[0, :2] for a in atoms if a.info["generation"] < gen])
        picks = np.array([a.positions[0, :2] for a in atoms if a.info["generation"] == gen])
        for row, (field, lv, cmap) in enumerate(((mean, levels, "viridis"),
                                                 (np.log10(var + 1e-12), 20, "magma"))):
            ax = axes[row][col]
            cs = ax.contourf(field.reshape(n, n), lv, extent=ext, cmap=cmap)
            ax.scatter(seen[:, 0], seen[:, 1], s=3, c="white")
            if len(picks):
                ax.scatter(picks[:, 0], picks[:, 1], s=20, c="red", marker="x")
            ax.set_title(f"{method}, generation {gen}: " + ("mean E" if row == 0
                                                             else "log10 σ²_F"))
            fig.colorbar(cs, ax=ax, shrink=0.8)
    axes[1][0].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summary(results: c.Results, criteria: dict) -> dict:
    out = {m: {"labels_to_target": t} for m, t in c.target_summary(results, criteria).items()}
    for m, runs in results.items():
        rows, last = [r for h in runs for r in h], [h[-1] for h in runs]
        col = lambda rs, k: [c.metric(r, k) for r in rs]  # noqa: E731
        out[m].update({f"final_{k.split('.')[-1]}": c.median_ci(col(last, k))
                       for k in ("grid.rmse_grid", "grid.rmse_low", "labels")})
        out[m].update(max_abs_coordinate=np.nanmax(col(rows, "sampled_abs_max")),
                      max_sampled_energy=np.nanmax(col(rows, "sampled_energy_max")),
                      median_displacement=c.median_ci(col(rows, "sampled_displacement"))[0],
                      seconds_per_loop=np.nanmean(col(last, "seconds")))
    return out


def markdown(results: c.Results, settings: dict, summ: dict, criteria: dict, notes: str) -> str:
    tables = "".join(f"\n## {title} (median [90 % bootstrap CI] over loops)\n\n"
                     + c.table_by_generation(results, {k: title}, fmt=".3g")
                     for k, title in KEYS.items())
    heads = "".join(
        f"| {m} | {c.format_ci(*s['final_rmse_grid'])} | {c.format_ci(*s['final_rmse_low'])} | "
        f"{c.format_ci(*s['final_labels'], fmt='.0f')} | {s['max_abs_coordinate']:.3f} | "
        f"{s['max_sampled_energy']:.3g} | {s['median_displacement']:.3f} | "
        f"{s['seconds_per_loop'] / 60:.0f} |\n" for m, s in summ.items())
    return (
        "# 2D double well: adversarial attacks vs random sampling (paper Fig. 2)\n\n"
        f"Command: `{settings['command']}`\n\n"
        "E(x, y) = 10x⁴ − 10x² + 2x + 4y⁴ on [−1.2, 1.2]² (box maximum 17.03). Each loop is "
        "`examples/double_well.yaml` run by the package's active-learning loop (seed = repeat "
        "index): 800 uniform points kept where E < −2 (left well only), a fresh committee of 5 "
        "MLPs per generation, 4 candidates per training point; every sampler's candidates pass "
        "the gate (80th percentile of the training set's σ²_F), are ranked by the attack "
        "objective log σ²_F − E/kT and de-duplicated; at most 20 are labelled. "
        "Generation 1 is the committee on the initial data (paper counting). *random*: "
        f"Gaussian displacement, σ = {settings['random_scale']:g} per coordinate (the median "
        "attack displacement of the earlier run); *uniform*: uniform points in the box; both "
        "go through the same gate and cap. Grid RMSE: committee mean vs truth on 100 × 100 "
        "points.\n\nSettings: `" + json.dumps(settings) + "`\n" + tables
        + f"\n## Labels to reach {c.criteria_text(criteria)}\n\n"
        "Training points (initial ones included) at the first generation meeting the target."
        "\n\n" + c.table_labels_to_target(results, criteria)
        + "\n## Last generation, and where the points went\n\n"
        "| method | grid RMSE | RMSE where E < 0 | points | max abs coordinate of any added "
        "point | highest true E of any added point | median distance to seed | minutes per loop |"
        "\n|---|---|---|---|---|---|---|---|\n" + heads
        + "\n![curves](double_well_curves.png)\n\n![per label](double_well_labels.png)\n\n"
        + "".join(f"![{m} maps](double_well_maps_{m}.png)\n\n" for m in results) + notes)


def main(argv=None) -> None:
    p = c.bench_args(__doc__.splitlines()[0], "double_well", repeats=5, workers=2)
    p.add_argument("--generations", type=int, default=7, help="paper counting (%(default)s)")
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--steps", type=int, default=300, help="attack Adam steps (%(default)s)")
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--random-scale", type=float, default=0.3348)
    p.add_argument("--target", type=float, default=0.03, help="grid RMSE target")
    args = p.parse_args(argv)
    s = {k: getattr(args, k) for k in ("generations", "epochs", "steps", "restarts",
                                       "random_scale")}
    flags = [f for f in (sys.argv[1:] if argv is None else argv) if f != "--aggregate-only"]
    settings = {**s, "repeats": args.repeats, "target": args.target, "example":
                c.relative(EXAMPLE), "command": " ".join(["python benchmarks/double_well.py",
                                                          *flags])}
    if args.aggregate_only:
        results = c.load_histories(METHODS, args.repeats, args.work_dir)
    else:
        results = c.run_repeats({m: partial(run_loop, m, s) for m in METHODS}, args.repeats,
                                args.work_dir, args.workers)
    criteria, out = {"grid.rmse_grid": ("<=", args.target)}, Path(args.out_dir)
    plot = partial(c.plot_curves, results, log={"grid.rmse_grid", "grid.rmse_low"},
                   targets={"grid.rmse_grid": args.target})
    plot(KEYS, out / "double_well_curves.png", labels_key="generation", xlabel="generation")
    plot(dict(list(KEYS.items())[:2]), out / "double_well_labels.png", xlabel="labels")
    for m in results:
        plot_maps(Path(args.work_dir) / m / "repeat_0", m, out / f"double_well_maps_{m}.png",
                  [g for g in MAP_GENERATIONS if g <= args.generations])
    md = out / "double_well.md"
    text = md.read_text() if md.exists() and args.aggregate_only else ""
    notes = text[text.rfind("\n", 0, text.find(NOTES)) + 1:] if NOTES in text else ""
    summ = summary(results, criteria)
    c.write_json("double_well", settings, results, summ, out)
    print(c.write_markdown("double_well", markdown(results, settings, summ, criteria, notes),
                           out).read_text())


if __name__ == "__main__":
    main()
