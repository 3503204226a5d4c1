"""NH3 on the paper's own DFT data: attack vs MD-based AL with BP86-D3(BJ)/def2-SVP (PySCF).

    python benchmarks/ammonia_dft.py            # 2 repeats x 2 methods, ~1 h on 2 cores

Data: ../shared/data/ammonia_paper.extxyz (138 frames, energies relative to the lowest frame,
eV; forces eV/Å). The oracle is the data's own level, the PySCF preset
"bp86-d3bj/def2-svp" (libxc GGA_X_B88,GGA_C_P86VWN + D3(BJ)). The set's energies are shifted
to absolute values by one oracle call on its lowest frame. Initial data: the frames below
5 kcal/mol; test set: every other frame plus the oracle's inversion path (21 geometries
through the planar transition state, labelled with energies and forces). Output:
docs/benchmarks/ammonia_dft.{md,json} and plots; run directories in runs/bench_ammonia_dft/.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ammonia import ROOT, parser, reference_file, run_benchmark  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ammonia_paper.extxyz"
ORACLE = {"type": "pyscf", "preset": "bp86-d3bj/def2-svp"}
KCAL = 0.0433641042  # eV per kcal/mol


def split_paper_data(data: Path, work: Path, below_kcal: float) -> tuple[Path, Path]:
    """initial.extxyz (frames below the threshold) and test.extxyz (the rest + the path)."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from advsample.oracles import make_oracle

    initial, test = work / "initial.extxyz", work / "test.extxyz"
    if initial.exists() and test.exists():
        return initial, test
    frames = ase.io.read(data, ":")
    rel = np.array([a.get_potential_energy() for a in frames])
    oracle = make_oracle(ORACLE)
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
    ase.io.write(initial, [a for a, k in zip(shifted, keep) if k], format="extxyz")
    ref = json.loads(reference_file(work, {"system": {"molecule": "NH3"},
                                           "oracle": ORACLE,
                                           "umbrella_report": True}).read_text())
    path = []
    for pos in ref["positions"]:
        a = Atoms(ref["numbers"], positions=pos)
        r = oracle.label(a)
        if r.ok:
            a.calc = SinglePointCalculator(a, energy=r.energy, forces=r.forces)
            path.append(a)
    ase.io.write(test, [a for a, k in zip(shifted, keep) if not k] + path, format="extxyz")
    (work / "split.json").write_text(json.dumps({
        "initial": int(keep.sum()), "held_out": int((~keep).sum()), "path": len(path),
        "offset_eV": offset}))
    return initial, test


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_ammonia_dft")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--below-kcal", type=float, default=5.0)
    p.set_defaults(repeats=2, methods=["attack", "md"], test_frames=0)
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    args.argv = argv
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    initial, test = split_paper_data(args.data, args.work, args.below_kcal)

    def configure(config: dict) -> None:
        config["oracle"] = dict(ORACLE)

    run_benchmark("ammonia_dft", args, [initial] * args.repeats, test, configure)


if __name__ == "__main__":
    main()
