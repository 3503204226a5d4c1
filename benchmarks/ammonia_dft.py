"""NH3 on the paper's own DFT data: attack vs MD-based AL with BP86-D3(BJ)/def2-SVP (PySCF).

    python benchmarks/ammonia_dft.py                  # 3 repeats x 4 methods, hours on 2 cores
    python benchmarks/ammonia_dft.py --aggregate-only # only rewrite the docs from the runs

Data: ../shared/data/ammonia_paper.extxyz (138 frames, energies relative to the lowest frame,
eV; forces eV/Å). The oracle is the data's own level, the PySCF preset "bp86-d3bj/def2-svp".
Made once in runs/benchmarks/ammonia_dft/reference/: the set shifted to absolute energies by
one oracle call on its lowest frame; initial.extxyz (the frames below 5 kcal/mol, the same
for every loop), path.extxyz (the oracle's inversion path, 21 points), minimum.extxyz (its
first point, where the NN-MD stability runs start) and test.extxyz (the other frames + the
path). Loops: examples/ammonia_xtb.yaml + benchmarks/configs/ammonia.yaml +
benchmarks/configs/ammonia_dft.yaml (seed = repeat, the methods of ammonia.yaml; ``--set`` as in
loops.py), judged by their path, test_set and stability evaluators (ammonia.py's metrics and
target), in runs/benchmarks/ammonia_dft/<method>/repeat_<r>/ (resumable). Writes
docs/benchmarks/ammonia_dft.{md,json} and ammonia_dft_curves.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import common
from ammonia import EXAMPLE, KEYS, LOG, METHODS, TARGET
from loops import CONFIGS, benchmark, configure, method_config, parser, prepare

DATA = common.REPO.parent / "shared" / "data" / "ammonia_paper.extxyz"
KCAL = 0.0433641042  # eV per kcal/mol
FILES = [EXAMPLE, f"{CONFIGS}/ammonia.yaml", f"{CONFIGS}/ammonia_dft.yaml"]


def make_reference(ref: Path, config: dict, data: Path, below_kcal: float, points: int) -> None:
    """initial, path, minimum and test extxyz files and split.json in ``ref`` (once)."""
    if (ref / "split.json").exists():
        return
    import ase.io
    import numpy as np
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    from advsample.config import parse_config
    from advsample.evaluators.path import generated_path
    from advsample.oracles import make_oracle

    oracle = make_oracle(parse_config(method_config(config)).oracle.spec())
    frames = ase.io.read(data, ":")
    rel = np.array([a.get_potential_energy() for a in frames])
    lowest = oracle.label(frames[int(np.argmin(rel))])
    if not lowest.ok:
        raise RuntimeError(f"oracle failed on the lowest frame: {lowest.message}")
    offset = lowest.energy - rel.min()
    shifted = []
    for a, e in zip(frames, rel):
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=e + offset, forces=a.get_forces())
        shifted.append(b)
    keep = rel - rel.min() < below_kcal * KCAL
    path, _ = generated_path("umbrella_inversion", molecule("NH3"), oracle,
                             ref / "path.extxyz", points)
    ase.io.write(ref / "minimum.extxyz", path[:1], format="extxyz")
    ase.io.write(ref / "test.extxyz", [a for a, k in zip(shifted, keep) if not k] + path,
                 format="extxyz")
    ase.io.write(ref / "initial.extxyz", [a for a, k in zip(shifted, keep) if k],
                 format="extxyz")
    (ref / "split.json").write_text(json.dumps({
        "data": common.relative(data), "below_kcal": below_kcal, "initial": int(keep.sum()),
        "held_out": int((~keep).sum()), "path": len(path), "offset_eV": float(offset),
        "barrier_eV": float(max(a.get_potential_energy() for a in path)
                            - path[0].get_potential_energy())}))


def main():
    p = parser(__doc__, "ammonia_dft", METHODS, repeats=3)
    p.add_argument("--data", type=Path, default=DATA, help="the paper's NH3 extxyz")
    p.add_argument("--below-kcal", type=float, default=5.0, help="initial data cut (kcal/mol)")
    p.add_argument("--path-points", type=int, default=21, help="points on the oracle path")
    args = prepare(p.parse_args())
    ref = args.work_dir / "reference"
    if not args.aggregate_only:
        make_reference(ref, configure(FILES, ref, args.set), args.data.resolve(), args.below_kcal,
                       args.path_points)
    split = json.loads((ref / "split.json").read_text()) if (ref / "split.json").exists() else {}
    intro = ["# NH3 inversion (PySCF BP86-D3(BJ)/def2-SVP, the paper's data): attack vs "
             "MD-based AL", "",
             "Initial data: the frames of `../shared/data/ammonia_paper.extxyz` below "
             f"{args.below_kcal:g} kcal/mol ({split.get('initial', '?')} frames, shifted to "
             f"absolute energies by {split.get('offset_eV', float('nan')):.3f} eV from one "
             f"oracle call); test set: the {split.get('held_out', '?')} other frames + "
             f"{split.get('path', '?')} oracle points along the inversion path (barrier "
             f"{split.get('barrier_eV', float('nan')):.4f} eV)."]
    benchmark("ammonia_dft", args, FILES, lambda config: intro, KEYS, TARGET, LOG)


if __name__ == "__main__":
    main()
