"""Alanine dipeptide with GFN2-xTB: do attacks find the rare conformers first?

    python benchmarks/alanine.py                      # 6 methods x 3 repeats, hours on 2 cores
    python benchmarks/alanine.py --aggregate-only     # only rewrite the docs from the runs
    python benchmarks/alanine.py --methods attack_torsion md_300K --set loop.generations=2

Loop = examples/alanine_xtb.yaml merged with benchmarks/configs/alanine.yaml, seed = repeat,
the method's overrides from that file's ``methods`` (``--set KEY=VALUE`` overrides any key).
Every loop starts from 300 K GFN2-xTB MD in the C7eq basin (seed = repeat) and adds <= 10
labels per generation. Judged by the relaxed phi/psi scan of benchmarks/alanine_reference.py
(conformers: which basins within 0.4 eV of the minimum hold a label, energy and force errors
on the scan points within 0.4 eV) and NN-MD stability at 300 K. Loops:
runs/benchmarks/alanine/<method>/repeat_<r>/ (resumable). Writes
docs/benchmarks/alanine.{md,json}, alanine_curves.png and one Ramachandran figure per method
(alanine_rama_<method>.png: the reference map with the labelled structures of repeat 0, and
the committee's error map on the scan).
"""

from __future__ import annotations

from pathlib import Path

from loops import CONFIGS, benchmark, parser, prepare

EXAMPLE = "examples/alanine_xtb.yaml"
METHODS = ["attack_torsion", "attack", "md_300K", "md_600K", "biased_md", "random"]
KEYS = {"conformers.fraction_basins_visited": "fraction of basins holding a label",
        "conformers.energy_rmse": "energy RMSE on the scan (eV)",
        "conformers.forces_rmse": "force RMSE on the scan (eV/Å)",
        "stability_300K.fraction_stable": "stable 300 K NN-MD runs"}
BASINS = {"conformers.fraction_basins_visited": (">=", 1.0)}
ACCURATE = {"conformers.energy_rmse": ("<=", 0.05),
            "stability_300K.fraction_stable": (">=", 0.97)}
LOG = frozenset(["conformers.energy_rmse", "conformers.forces_rmse"])


def ramachandran_figures(results: dict, config: dict, out_dir: Path) -> list[str]:
    """Per method, repeat 0's last evaluated generation on the reference map; doc lines."""
    from advsample.evaluators.conformers import load_grid, ramachandran_figure

    spec = next(e for e in config["evaluate"] if e["type"] == "conformers")
    grid = load_grid(spec["file"])
    lines = ["## Ramachandran maps (repeat 0, last generation)", ""]
    for method, histories in results.items():
        last = histories[0][-1]["conformers"]
        path = out_dir / f"alanine_rama_{method}.png"
        ramachandran_figure(grid, [spec["phi"], spec["psi"]], last["training_phi_psi"],
                            last["errors"], path, title=method)
        lines += [f"### {method}", "", f"![{method}]({path.name})", ""]
    return lines


def main():
    p = parser(__doc__, "alanine", METHODS)
    args = prepare(p.parse_args())
    files = [EXAMPLE, f"{CONFIGS}/alanine.yaml"]
    intro = ["# Alanine dipeptide (GFN2-xTB): attacks vs MD-based AL vs biased MD vs random",
             "", "Initial data: 300 K GFN2-xTB MD in the C7eq basin (seed = repeat). The "
             "reference is a relaxed GFN2-xTB phi/psi scan on a 20° grid "
             "(examples/data/alanine_phi_psi_grid.extxyz, benchmarks/alanine_reference.py); "
             "its basins are its local minima within 0.4 eV of the lowest point."]
    benchmark("alanine", args, files, lambda config: intro, KEYS, ACCURATE, LOG,
              targets={"(a) every basin": BASINS,
                       "(b) accurate and stable": ACCURATE},
              after=ramachandran_figures)


if __name__ == "__main__":
    main()
