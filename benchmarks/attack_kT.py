"""Where attacks go as kT changes: one generation of attacks per kT on three systems.

    python benchmarks/attack_kT.py                  # ~30 min of a core, after the loops below
    python benchmarks/attack_kT.py --aggregate-only # only rewrite the doc from the cache

Each case is a finished attack loop of another benchmark (by default in that driver's
default work directory; ``--case NAME=RUN_DIR:GENERATION`` names another): its stored
config, its generation-G committee and its labels up to G (the loop must exist: run that
benchmark first). For every
kT = factor x spread (``BoltzmannPrior.energy_spread`` of the loop's initial data: the spread
of its per-atom energies, which was kT "auto" until the rule of ``BoltzmannPrior.auto_kT``
replaced it; the doc gives that rule's kT per case as a factor of the spread) the
generation's attack is run again exactly as the loop runs it (same
seeds, sampler, gate and selection; only kT changes), and every candidate is labelled with
the loop's own oracle. Reported per case and kT: candidates above the uncertainty gate,
picks, the oracle energy of the picks above the lowest initial structure of the same
composition, and the fraction of picks at a thermal energy (at most the harmonic thermal
ceiling of ``advsample.evaluators.conformers.thermal_ceiling`` at the initial data's
temperature: what an oracle MD frame could have). Cached per case and kT in
runs/benchmarks/attack_kT/; writes docs/benchmarks/attack_kT.{md,json,png}.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import common as c
import numpy as np
import yaml

CASES = {  # name -> (run directory of a finished attack loop, generation of its committee):
    # the default work directories of benchmarks/ammonia.py, alanine.py and zeolites.py
    "NH3": ("runs/benchmarks/ammonia/attack/repeat_0", 1),
    "alanine dipeptide": ("runs/benchmarks/alanine/attack_torsion/repeat_0", 2),
    "zeolite complexes": ("runs/benchmarks/zeolites/attack/repeat_0", 1),
}
FACTORS = [4.0, 2.0, 1.0, 0.5, 0.2, 0.1]


def measure(run: Path, generation: int, factor: float) -> dict:
    """One generation of the loop in ``run`` re-attacked with kT = factor x spread; every
    candidate labelled by the loop's oracle. Energies in eV."""
    import torch

    from advsample.attack import BoltzmannPrior
    from advsample.committee import Committee
    from advsample.config import parse_config
    from advsample.evaluators.conformers import thermal_ceiling
    from advsample.loop import sample_generation
    from advsample.oracles import make_oracle
    from advsample.run import loop_settings, make_sampler
    from advsample.select import choose_seeds
    from advsample.store import Store
    from advsample.structures import Batch

    torch.set_num_threads(1)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    labels = Store(run / "labels.db").training_atoms(max_generation=generation)
    training = Batch.from_atoms(labels)
    initial = [a for a in labels if a.info["generation"] == 0]
    spread = BoltzmannPrior.energy_spread(Batch.from_atoms(initial))
    config = copy.deepcopy(stored)
    config["sampler"]["kT"] = factor * spread
    cfg = parse_config(config, str(run / "config.yaml"))
    s = loop_settings(cfg, progress=False)
    committee = Committee.load(run / "generations" / f"gen_{generation:03d}" / "committee.pt")
    committee.compile = False
    seeds = choose_seeds(committee, training, s.seeds, s.seed_choice,
                         seed=s.seed * 1000 + generation, metric=s.select.metric,
                         reduce=s.select.reduce)
    start = time.perf_counter()
    result = sample_generation(committee, training, make_sampler(cfg, generation, False),
                               factor * spread, replace(s.select, seed=s.select.seed * 1000
                                                      + generation),
                               seeds=training.select(seeds))
    seconds = time.perf_counter() - start
    oracle = make_oracle(cfg.oracle.spec())
    lowest = {}  # composition -> lowest initial energy (eV)
    for a in initial:
        key = a.get_chemical_formula()
        lowest[key] = min(lowest.get(key, np.inf), a.get_potential_energy())
    above, ceiling = [], []
    for a in result.candidates.batch.to_atoms():
        label = oracle.label(a)
        above.append(label.energy - lowest[a.get_chemical_formula()] if label.ok else np.nan)
        ceiling.append(thermal_ceiling(len(a), cfg.initial.temperature_K))
    above, ceiling = np.array(above), np.array(ceiling)
    gated = result.candidates.uncertainty.numpy() >= result.threshold
    return {"factor": factor, "spread": spread, "kT": factor * spread, "n_atoms_mean":
            float(np.mean([len(a) for a in initial])),
            "temperature_K": cfg.initial.temperature_K, "attack_seconds": seconds,
            "candidates": len(above), "above_gate": int(gated.sum()),
            "picks": result.chosen.tolist(), "energy_above_lowest": above.tolist(),
            "thermal_ceiling": ceiling.tolist()}


def summary(m: dict) -> dict:
    """Medians and fractions of one measurement (NaN-safe; failed labels left out)."""
    e, ceiling = np.array(m["energy_above_lowest"]), np.array(m["thermal_ceiling"])
    picks = np.array(m["picks"], dtype=int)
    thermal = e <= ceiling

    def med(x):
        return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")

    return {"candidates_median_eV": med(e), "candidates_thermal": float(np.mean(thermal)),
            "picks": len(picks), "picks_median_eV": med(e[picks]) if len(picks) else None,
            "picks_p90_eV": float(np.nanpercentile(e[picks], 90)) if len(picks) else None,
            "picks_thermal": float(np.mean(thermal[picks])) if len(picks) else None,
            "thermal_ceiling_eV": float(np.median(ceiling))}


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in results.items():
        f = [r["factor"] for r in rows]
        s = [summary(r) for r in rows]
        ax_e.plot(f, [x["picks_median_eV"] / x["thermal_ceiling_eV"]
                      if x["picks_median_eV"] is not None else np.nan for x in s], "o-",
                  label=name)
        ax_t.plot(f, [x["picks_thermal"] if x["picks_thermal"] is not None else np.nan
                      for x in s], "o-", label=name)
    for ax in (ax_e, ax_t):
        ax.set_xscale("log")
        ax.set_xlabel("kT / spread of the initial per-atom energies")
    ax_e.set_yscale("symlog", linthresh=1.0)  # picks below the lowest initial: < 0
    ax_e.axhline(1.0, color="k", lw=0.8, ls="--")
    ax_e.set_ylabel("median pick energy / thermal ceiling")
    ax_t.set_ylabel("fraction of picks at a thermal energy")
    ax_t.set_ylim(-0.05, 1.05)
    ax_e.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def initial_auto_kT(run: Path) -> float:
    """kT "auto" (``BoltzmannPrior.auto_kT``, eV/atom) of the initial data of the loop in
    ``run``."""
    from advsample.attack import BoltzmannPrior
    from advsample.store import Store
    from advsample.structures import Batch

    initial = Store(run / "labels.db").training_atoms(max_generation=0)
    return BoltzmannPrior.auto_kT(Batch.from_atoms(initial))


def main():
    p = c.bench_args(__doc__.splitlines()[0], "attack_kT")
    p.add_argument("--factors", type=float, nargs="+", default=FACTORS,
                   help="kT / spread values (%(default)s)")
    p.add_argument("--case", action="append", default=[], metavar="NAME=RUN_DIR:GENERATION",
                   help="another loop for a case (e.g. 'NH3=runs/benchmarks/ammonia_v5/attack/"
                   "repeat_0:1'); the run directory relative to the repository root")
    args = p.parse_args()
    for spec in args.case:
        name, sep, where = spec.partition("=")
        run, sep2, generation = where.rpartition(":")
        if not (sep and sep2 and name in CASES and generation.isdigit()):
            p.error(f"--case {spec!r}: expected NAME=RUN_DIR:GENERATION with NAME one of "
                    f"{sorted(CASES)}")
        CASES[name] = (run, int(generation))
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results, auto = {}, {}  # auto: case -> kT "auto" of its initial data (eV/atom)
    for name, (run, generation) in CASES.items():
        run = c.REPO / run
        if not (run / "labels.db").exists():
            print(f"{name}: {c.relative(run)} not found (run its benchmark first); skipped")
            continue
        for factor in args.factors:
            cache = work / f"{run.parent.parent.name}_{run.parent.name}_g{generation}_" \
                f"{factor:g}.json"
            if not cache.exists():
                if args.aggregate_only:
                    continue
                print(f"{name}: kT = {factor:g} x spread ...", flush=True)
                c._write_atomic(cache, json.dumps(measure(run, generation, factor)))
            results.setdefault(name, []).append(json.loads(cache.read_text()))
        if name in results:
            auto[name] = initial_auto_kT(run)
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "attack_kT.json").write_text(json.dumps(
        {"cases": {k: {"run": v[0], "generation": v[1]} for k, v in CASES.items()},
         "results": results, "summary": {k: [summary(r) for r in v]
                                         for k, v in results.items()}}, indent=1))
    figure = plot(results, out / "attack_kT.png")
    lines = ["# kT of the Boltzmann factor: where attacks go", "",
             "Command: `python benchmarks/attack_kT.py`. One generation of attacks re-run per "
             "kT = factor x spread on the committee of a finished loop (same seeds, sampler, "
             "gate and selection as the loop; only kT changes), every candidate labelled by "
             "the loop's oracle. The spread is max - min of the initial data's per-atom "
             "energies (kT 'auto' until the current rule, 4 k_B T / atoms with T implied by "
             "the initial energies' fluctuation, replaced it; its value is given per case). "
             "Energies are oracle energies above the lowest initial structure of "
             "the same composition; a pick is at a thermal energy when that is at most the "
             "harmonic thermal ceiling (mean + 4 std of the potential energy of 3N - 6 modes "
             "at the initial data's temperature). Cached in "
             f"`{c.relative(work)}`.", ""]
    for name, rows in results.items():
        run, generation = CASES[name]
        first = rows[0]
        lines += [f"## {name}", "",
                  f"`{run}`, committee of generation {generation}; spread "
                  f"{first['spread']:.4g} eV/atom; kT auto {auto[name]:.4g} eV/atom "
                  f"({auto[name] / first['spread']:.2f} x spread); "
                  f"{first['n_atoms_mean']:.0f} atoms on "
                  f"average; thermal ceiling {summary(first)['thermal_ceiling_eV']:.2f} eV "
                  f"at {first['temperature_K']:g} K.", "",
                  "| kT / spread | kT (eV/atom) | candidates | above gate | candidates' median "
                  "E (eV) | thermal candidates | picks | picks' median E (eV) | picks' p90 E "
                  "(eV) | thermal picks |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            s = summary(r)
            lines.append(
                f"| {r['factor']:g} | {r['kT']:.4g} | {r['candidates']} | {r['above_gate']} | "
                f"{s['candidates_median_eV']:.2f} | {s['candidates_thermal']:.0%} | "
                f"{s['picks']} | {c.format_value(s['picks_median_eV'], '.2f', '-')} | "
                f"{c.format_value(s['picks_p90_eV'], '.2f', '-')} | "
                f"{'-' if s['picks_thermal'] is None else format(s['picks_thermal'], '.0%')} |")
        lines.append("")
    lines += [f"![kT]({figure.name})", ""]
    print(c.write_markdown("attack_kT", "\n".join(lines), out).read_text())


if __name__ == "__main__":
    main()
