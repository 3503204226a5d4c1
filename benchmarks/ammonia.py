"""NH3 with GFN2-xTB: adversarial attacks vs MD-based active learning vs random displacements.

    python benchmarks/ammonia.py                      # 3 repeats x 3 methods, hours on 2 cores
    python benchmarks/ammonia.py --aggregate-only     # only rewrite the docs from the runs
    python benchmarks/ammonia.py --set loop.generations=2 --set evaluate.stability.runs=4 ...

Loop = examples/ammonia_xtb.yaml merged with benchmarks/configs/ammonia.yaml, seed = repeat,
the method's overrides from that file's ``methods`` (``--set KEY=VALUE`` overrides any key).
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

from pathlib import Path

from loops import CONFIGS, benchmark, configure, method_config, parser, prepare

EXAMPLE = "examples/ammonia_xtb.yaml"
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
    benchmark("ammonia", args, files, lambda config: intro, KEYS, TARGET, LOG)


if __name__ == "__main__":
    main()
