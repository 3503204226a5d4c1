"""Alanine dipeptide with GFN2-xTB: do attacks find the rare conformers first?

    python benchmarks/alanine.py                      # 6 methods x 3 repeats, hours on 2 cores
    python benchmarks/alanine.py --aggregate-only     # only rewrite the docs from the runs
    python benchmarks/alanine.py --methods attack_torsion md_300K --set loop.generations=2

Loop = examples/alanine_xtb.yaml merged with benchmarks/configs/alanine.yaml, seed = repeat,
the method's overrides from that file's ``methods`` (``--set KEY=VALUE`` overrides any key).
Every loop starts from 300 K GFN2-xTB MD in the C7eq basin (seed = repeat) and adds <= 10
labels per generation. Judged by the relaxed phi/psi scan of benchmarks/alanine_reference.py
(conformers: which basins within 0.4 eV of the minimum hold a label, energy and force errors
on the scan points within 0.4 eV; a label holds a basin only at a thermal energy for it)
and NN-MD stability at 300 K. Loops:
runs/benchmarks/alanine/<method>/repeat_<r>/ (resumable). Writes
docs/benchmarks/alanine.{md,json}, alanine_curves.png and one Ramachandran figure per method
(alanine_rama_<method>.png; <doc name>_rama_<method>.png with --doc-name: the reference map
with the labelled structures of repeat 0, and the committee's error map on the scan).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from loops import CONFIGS, benchmark, parser, prepare

EXAMPLE = "examples/alanine_xtb.yaml"
FILES = [EXAMPLE, f"{CONFIGS}/alanine.yaml"]  # merged in order into each loop's config
METHODS = ["attack_torsion", "attack", "md_300K", "md_600K", "biased_md", "random"]
KEYS = {"conformers.fraction_basins_visited": "fraction of basins holding a label",
        "conformers.energy_rmse": "energy RMSE on the scan (eV)",
        "conformers.forces_rmse": "force RMSE on the scan (eV/Å)",
        "stability_300K.fraction_stable": "stable 300 K NN-MD runs"}
BASINS = {"conformers.fraction_basins_visited": (">=", 1.0)}
ACCURATE = {"conformers.energy_rmse": ("<=", 0.05),
            "stability_300K.fraction_stable": (">=", 0.97)}
STABLE = {"stability_300K.fraction_stable": (">=", 0.97)}
LOG = frozenset(["conformers.energy_rmse", "conformers.forces_rmse"])


def conformers_judge(config: dict):
    """The run config's conformers evaluator (its grid, dihedrals and basin judge)."""
    from advsample.evaluators.conformers import ConformerEvaluator, load_grid

    spec = next(e for e in config["evaluate"] if e["type"] == "conformers")
    return ConformerEvaluator(load_grid(spec["file"]), spec["phi"], spec["psi"],
                              window_eV=spec.get("window_eV", 0.4),
                              basin_radius_deg=spec.get("basin_radius_deg", 30.0),
                              basin_temperature_K=spec.get("basin_temperature_K", 300.0))


def ramachandran_figures(results: dict, config: dict, out_dir: Path, work_dir: Path,
                         doc_name: str = "alanine") -> list[str]:
    """Per method, repeat 0's labels up to its last evaluated generation (from labels.db) on
    the reference map, with that committee's error map, in <doc_name>_rama_<method>.png (an
    ablation's figures do not overwrite the main page's); doc lines."""
    from advsample.evaluators.conformers import ramachandran_figure
    from advsample.store import Store

    judge = conformers_judge(config)
    grid = judge.grid
    lines = ["## Ramachandran maps (repeat 0, last generation)", "",
             "Dots: labels at most a thermal energy above the scan's top (window + the "
             "judge's ceiling); +: labels higher than that (distorted or torn structures).", ""]
    for method, histories in results.items():
        row = histories[0][-1]
        labels = Store(work_dir / method / "repeat_0" / "labels.db").training_atoms(
            max_generation=row["generation"])
        path = out_dir / f"{doc_name}_rama_{method}.png"
        ramachandran_figure(grid, [judge.phi, judge.psi],
                            [a for a in labels if len(a) == len(grid[0])],
                            row["conformers"]["errors"], path, title=method)
        lines += [f"### {method}", "", f"![{method}]({path.name})", ""]
    return lines


def intro(config: dict) -> list[str]:
    """The document's first lines: the system, the reference and the basin judge."""
    judge = conformers_judge(config)
    n_atoms, temperature = len(judge.grid[0]), judge.basin_temperature_K
    spec = next(e for e in config["evaluate"] if e["type"] == "conformers")
    return ["# Alanine dipeptide (GFN2-xTB): attacks vs MD-based AL vs biased MD vs random",
            "", "Initial data: 300 K GFN2-xTB MD in the C7eq basin (seed = repeat). The "
            f"reference is a relaxed GFN2-xTB phi/psi scan on a 20° grid (`{spec['file']}`, "
            "benchmarks/alanine_reference.py); its basins are its local minima within "
            f"{judge.window_eV:g} eV of the lowest point. A label holds a basin when its φ "
            f"and ψ are within {judge.basin_radius_deg:g}° of the basin's and its GFN2-xTB "
            f"energy is at most {judge.basin_energy_eV:.2f} eV above the basin's relaxed "
            f"energy (mean + 4 std of the harmonic potential energy of {3 * n_atoms - 6} "
            f"modes at {temperature:g} K: what a thermal frame of that conformer may have; a "
            "molecule torn apart at the basin's angles does not count). The driver "
            "recomputes this from every loop's labels.db (`judge_basins`), so loops "
            "evaluated by the first, angles-only rule are judged the same way."]


def basin_uncertainty(results: dict, config: dict, work_dir: Path) -> list[str]:
    """Does the committee's uncertainty point at the basins it has not labelled? Per method,
    repeat 0's committees of generation 0 and of its last evaluated generation: σ²_F (the
    gate's per-structure force variance, (eV/Å)²) at each basin's scan point and its rank
    among the scan points within the window (1: the most uncertain), and the median σ²_F of
    the window's points at φ < 0 (C7eq's side, where the initial data lie) and φ > 0."""
    import torch

    from advsample.committee import Committee
    from advsample.evaluators.conformers import angle_difference, dihedral_angles
    from advsample.select import training_uncertainty
    from advsample.structures import Batch

    torch.set_num_threads(1)
    judge = conformers_judge(config)
    grid = judge.grid
    energy = np.array([a.get_potential_energy() for a in grid])
    inside = energy - energy.min() <= judge.window_eV
    points = [a for a, keep in zip(grid, inside, strict=True) if keep]
    angles = dihedral_angles(np.stack([a.positions for a in points]), [judge.phi, judge.psi])
    nearest = [int(np.argmin(np.abs(angle_difference(angles, np.array(b[:2]))).max(axis=1)))
               for b in judge.basins]
    batch = Batch.from_atoms(points, labels=False)
    names = [f"({b[0]:.0f}°, {b[1]:.0f}°)" for b in judge.basins]
    lines = ["## Where the committee is uncertain on the scan (repeat 0)", "",
             f"σ²_F ((eV/Å)², the gate's measure) of the committee at each basin's scan point, "
             f"with its rank among the {len(points)} scan points within {judge.window_eV:g} eV "
             "(1: most uncertain), and the median over the window's points at φ < 0 (the "
             "initial data's side) and φ > 0.", "",
             "| method | generation | " + " | ".join(names) + " | median φ < 0 | median φ > 0 |",
             "|---|---|" + "---|" * (len(names) + 2)]
    for method, histories in results.items():
        run = work_dir / method / "repeat_0"
        for generation in sorted({0, histories[0][-1]["generation"]}):
            path = run / "generations" / f"gen_{generation:03d}" / "committee.pt"
            if not path.exists():
                continue
            committee = Committee.load(path)
            committee.compile = False
            var = training_uncertainty(committee, batch).numpy()
            rank = (-var).argsort().argsort() + 1
            cells = [f"{var[i]:.4f} (#{rank[i]})" for i in nearest]
            lines.append(f"| {method} | {generation} | " + " | ".join(cells) +
                         f" | {np.median(var[angles[:, 0] < 0]):.4f} | "
                         f"{np.median(var[angles[:, 0] > 0]):.4f} |")
    return lines + [""]


def judge_basins(results: dict, runs: dict, config: dict) -> None:
    """Basins held per generation, recomputed from each loop's labels.db with today's
    conformers judge (angles within the radius and oracle energy under the thermal ceiling,
    ``ConformerEvaluator.count_basins``): loops evaluated by the angles-only rule of the
    first runs are judged like new ones (for new ones nothing changes)."""
    from advsample.evaluators.conformers import dihedral_angles
    from advsample.store import Store

    judge = conformers_judge(config)
    n_atoms = len(judge.grid[0])
    for method, histories in results.items():
        for run, history in zip(runs[method], histories, strict=True):
            labels = Store(run / "labels.db").training_atoms()
            labels = [a for a in labels if len(a) == n_atoms]
            generation = np.array([a.info["generation"] for a in labels])
            angles = dihedral_angles(np.stack([a.positions for a in labels]),
                                     [judge.phi, judge.psi]).reshape(-1, 2)
            energy = np.array([a.get_potential_energy() for a in labels])
            for row in history:
                metrics = row.get("conformers")
                if metrics is None:
                    continue
                mine = generation <= row["generation"]
                if mine.sum() != row["n_train"]:
                    raise ValueError(f"{method}/{run.name} generation {row['generation']}: "
                                     f"{mine.sum()} labels in labels.db, {row['n_train']} "
                                     "trained on")
                counts = judge.count_basins(angles[mine], energy[mine])
                metrics.update(basin_counts=counts.tolist(),
                               basins_visited=int((counts > 0).sum()),
                               fraction_basins_visited=float((counts > 0).mean()),
                               basin_energy_eV=judge.basin_energy_eV)


def main():
    p = parser(__doc__, "alanine", METHODS)
    args = prepare(p.parse_args())
    benchmark("alanine", args, FILES, intro, KEYS, ACCURATE, LOG,
              targets={"(a) every basin": BASINS,
                       "(b) accurate and stable": ACCURATE,
                       "(c) stable (the stability half of b alone)": STABLE},
              after=lambda results, config, out_dir: ramachandran_figures(
                  results, config, out_dir, args.work_dir, args.doc_name)
              + basin_uncertainty(results, config, args.work_dir),
              rejudge=judge_basins)


if __name__ == "__main__":
    main()
