"""NH3 with GFN2-xTB: adversarial attacks vs MD-based active learning vs random displacements.

    python benchmarks/ammonia.py                      # 3 repeats x 3 methods, hours on 2 cores
    python benchmarks/ammonia.py --aggregate-only     # only rewrite the docs from the runs
    python benchmarks/ammonia.py --set loop.generations=2 --set evaluate.stability.runs=4 ...

Loop = examples/ammonia_xtb.yaml merged with benchmarks/configs/ammonia.yaml, seed = repeat,
the method's overrides from that file's ``methods`` (``--set KEY=VALUE`` overrides any key
of the shared part; a method's own overrides win, e.g. md_300K's 10 generations: set
``methods.md_300K.loop.generations`` for that).
Repeat r of every method starts from the same 300 K GFN2-xTB MD (seed r) and adds <= 20
labels per generation, judged by the config's evaluators: inversion-barrier error (path),
errors on a 1000 K GFN2-xTB MD test set (test_set; made once in
runs/benchmarks/ammonia/reference/), stable 10 ps NN-MD runs at 300 K (stability_300K) and
2 ps at 1000 K (stability). Loops: runs/benchmarks/ammonia/<method>/repeat_<r>/ (resumable;
history.json once finished). Writes docs/benchmarks/ammonia.{md,json} and
ammonia_curves.png. The loop machinery is loops.py's; ammonia_dft.py shares EXAMPLE, KEYS,
TARGET and LOG.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from loops import CONFIGS, benchmark, configure, method_config, parser, prepare

EXAMPLE = "examples/ammonia_xtb.yaml"
FILES = [EXAMPLE, f"{CONFIGS}/ammonia.yaml"]  # merged in order into each loop's config
METHODS = ["attack", "md_300K", "md_1000K", "random"]  # see benchmarks/configs/ammonia.yaml
KEYS = {"path.abs_barrier_error": "abs. barrier error (eV)",
        "test_set.forces_rmse": "force RMSE, test set (eV/Å)",
        "test_set.energy_rmse": "energy RMSE, test set (eV/atom)",
        "stability_300K.fraction_stable": "stable 300 K NN-MD runs",
        "stability.fraction_stable": "stable 1000 K NN-MD runs"}
TARGET = {"path.abs_barrier_error": ("<=", 0.02), "test_set.forces_rmse": ("<=", 0.1),
          "stability_300K.fraction_stable": (">=", 0.97)}
LOG = frozenset(list(KEYS)[:3])  # the errors: log scale


def make_test_set(path: Path, config: dict, frames: int, seed: int = 100) -> None:
    """GFN2-xTB Langevin MD at 1000 K from the relaxed minimum, 4 trajectories (once)."""
    import ase.io
    from ase.build import molecule

    from advsample.config import parse_config
    from advsample.initial_data import oracle_md, relaxed
    from advsample.oracles import make_oracle

    oracle = make_oracle(parse_config(method_config(config)).oracle.spec())
    start = relaxed(molecule("NH3"), oracle.calculator())
    out = [a for k in range(4) for a in oracle_md(start, oracle, 1000.0, steps=20 * (
        frames // 4), interval=20, seed=seed + k)[1:]]
    ase.io.write(path.with_suffix(".tmp.extxyz"), out, format="extxyz")
    path.with_suffix(".tmp.extxyz").replace(path)


def label_figure(work_dir: Path, results: dict, config: dict, out_dir: Path) -> list[str]:
    """Where each method's labels lie: umbrella coordinate h (Å, positive in the initial
    well) and oracle energy above the lowest initial one (eV), every repeat's labels after
    generation 0 coloured by generation over the initial data in grey; ammonia_labels.png
    and the doc lines (with, per method, the share of labels beyond the barrier, h < 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from advsample.store import Store
    from advsample.umbrella import umbrella_coordinate

    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results) + 1, 3.6),
                             sharey=True, squeeze=False, layout="constrained")
    lines = ["## Where the labels lie", "", "Every repeat's labels after generation 0 "
             "(colour: generation) over the initial data (grey): umbrella coordinate h "
             "(positive in the initial well, 0 at the planar barrier) against the GFN2-xTB "
             "energy above the lowest initial structure.", ""]
    for ax, method in zip(axes[0], results):
        h_all, e_all, g_all, h0_all, e0_all = [], [], [], [], []
        for run in sorted((work_dir / method).glob("repeat_*")):
            if not (run / "labels.db").exists():
                continue
            atoms = Store(run / "labels.db").training_atoms()
            h = umbrella_coordinate(np.array([a.positions for a in atoms]))
            e = np.array([a.get_potential_energy() for a in atoms])
            g = np.array([a.info["generation"] for a in atoms])
            initial = g == 0
            h *= np.sign(np.median(h[initial]))  # the initial well on the positive side
            e -= e[initial].min()
            h0_all.append(h[initial]), e0_all.append(e[initial])
            h_all.append(h[~initial]), e_all.append(e[~initial]), g_all.append(g[~initial])
        if not h_all:
            continue
        h, e, g = (np.concatenate(x) for x in (h_all, e_all, g_all))
        ax.scatter(np.concatenate(h0_all), np.concatenate(e0_all), s=6, c="0.7")
        points = ax.scatter(h, e, s=9, c=g, cmap="viridis")
        ax.axvline(0.0, color="k", lw=0.5, ls=":")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("umbrella coordinate h (Å)")
        ax.set_title(method)
        lines.append(f"- {method}: {len(h)} labels, {np.mean(h < 0):.0%} beyond the barrier "
                     f"(h < 0), median energy {np.median(e):.2f} eV above the minimum, "
                     f"{np.mean(e > 1.0):.0%} more than 1 eV above.")
    axes[0][0].set_ylabel("energy above the minimum (eV)")
    fig.colorbar(points, ax=axes[0].tolist(), label="generation")
    path = out_dir / "ammonia_labels.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [*lines, "", f"![labels]({path.name})", ""]


def main():
    p = parser(__doc__, "ammonia", METHODS)
    p.add_argument("--test-frames", type=int, default=200, help="1000 K test set size")
    args = prepare(p.parse_args())
    test = args.work_dir / "reference" / "test_1000K.extxyz"
    if not args.aggregate_only and not test.exists():
        make_test_set(test, configure(FILES, test.parent, args.set), args.test_frames)
    intro = ["# NH3 inversion (GFN2-xTB): attack vs MD-based AL vs random displacements", "",
             "Initial data: 300 K GFN2-xTB MD in one pyramidal well (seed = repeat); test "
             "set: GFN2-xTB MD at 1000 K from the minimum (crosses the barrier)."]
    benchmark("ammonia", args, FILES, lambda config: intro, KEYS, TARGET, LOG,
              after=partial(label_figure, args.work_dir))


if __name__ == "__main__":
    main()
