"""Depth and width of the uncertainty bias of biased MD: one setting for NH3 and alanine?

    python benchmarks/bias_depth.py                  # ~15 min of a core (after the loops below)
    python benchmarks/bias_depth.py --aggregate-only # only rewrite the doc from the cache

Each case is the generation 0 of a benchmark (its stored config, committee and initial
labels; run that benchmark first, or at least its generation 0). For every bias setting of
``SETTINGS`` (depth A and width B in their units; depth 0 is plain MD) one generation of
biased NN-MD at 300 K runs from the loop's seeds as the loop's sampler would, scaled down
(8 seeds spread over the data, 2 runs each, 1000 steps of 0.5 fs, a frame every 20 steps),
and every frame is labelled with the loop's oracle. Reported per case and setting: frames,
the fraction at a thermal energy (oracle energy above the lowest initial structure at most
the harmonic thermal ceiling of ``advsample.evaluators.conformers.thermal_ceiling``, 300 K),
the fraction above the loop's uncertainty gate, the fraction both (useful candidates), the
fraction of thermal frames in the case's rare region (NH3: near planar, |umbrella height|
< 0.1 Å; alanine: φ > 0, the C7ax/αL side that 300 K MD from C7eq does not reach in
picoseconds), the frames' median σ²_F over plain MD's and their median energy. Cached in
runs/benchmarks/bias_depth/; writes docs/benchmarks/bias_depth.{md,json,png}.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import common as c
import numpy as np
import yaml

TEMPERATURE_K = 300.0
CASES = {  # name -> (generation-0 run directory, rare-region test on the frames' positions)
    "NH3": ("runs/benchmarks/ammonia_v5/generation_0/repeat_0", "planar"),
    "alanine dipeptide": ("runs/benchmarks/alanine_v2/generation_0/repeat_0", "phi_positive"),
}
SETTINGS = {  # label -> biased_md sampler settings (plain MD: depth 0)
    "plain MD": dict(bias_strength=0.0),
    "0.1 eV/atom, B 0.01 eV (first default)": dict(bias_strength=0.1, bias_units="eV/atom",
                                                  bias_width=0.01, bias_width_units="eV"),
    "5 kT, B 2x seeds": dict(bias_strength=5.0, bias_width=2.0),
    "10 kT, B 2x seeds": dict(bias_strength=10.0, bias_width=2.0),
    "20 kT, B 2x seeds": dict(bias_strength=20.0, bias_width=2.0),
    "40 kT, B 2x seeds": dict(bias_strength=40.0, bias_width=2.0),
    "10 kT, B 1x seeds": dict(bias_strength=10.0, bias_width=1.0),
    "10 kT, B 4x seeds": dict(bias_strength=10.0, bias_width=4.0),
}
KEYS = [("thermal", "frames at a thermal energy"), ("useful", "thermal and above the gate"),
        ("uncertainty", "median σ²_F / plain MD's"), ("rare_thermal", "thermal, rare region")]


def rare(kind: str, positions: np.ndarray, config: dict) -> np.ndarray:
    """Bool [n]: frames (positions [n, N, 3], Å) in the case's rare region."""
    if kind == "planar":
        from advsample.umbrella import umbrella_coordinate

        return np.abs(umbrella_coordinate(positions)) < 0.1
    from advsample.evaluators.conformers import dihedral_angles

    spec = next(e for e in config["evaluate"] if e["type"] == "conformers")
    return dihedral_angles(positions, [spec["phi"]])[:, 0] > 0.0


def measure(run: Path, kind: str, bias: dict) -> dict:
    """One generation of biased MD with the ``bias`` settings (of the biased_md sampler)
    from the generation-0 committee of ``run``; every frame labelled by the loop's oracle.
    Energies in eV."""
    import torch

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
    config = copy.deepcopy(yaml.safe_load((run / "config.yaml").read_text()))
    config["evaluate"] = [e for e in config.get("evaluate", []) if e["type"] == "conformers"]
    config["sampler"].update(type="biased_md", md_temperature_K=TEMPERATURE_K, md_steps=1000,
                             md_interval=20, restarts=2, seeds=8, seed_choice="spread",
                             **bias)
    config["select"].update(max_new=10_000, min_separation=0.0, diversity="none")
    cfg = parse_config(config, str(run / "config.yaml"))
    s = loop_settings(cfg, progress=False)
    labels = Store(run / "labels.db").training_atoms(max_generation=0)
    training = Batch.from_atoms(labels)
    committee = Committee.load(run / "generations" / "gen_000" / "committee.pt")
    committee.compile = False
    seeds = choose_seeds(committee, training, s.seeds, s.seed_choice, seed=s.seed * 1000,
                         metric=s.select.metric, reduce=s.select.reduce)
    start = time.perf_counter()
    sampler = make_sampler(cfg, 1, False)
    strength, per_atom = sampler.bias_amplitude()
    width = sampler.width_eV(committee, training.select(seeds))
    result = sample_generation(committee, training, sampler, 0.05,
                               s.select, seeds=training.select(seeds))
    seconds = time.perf_counter() - start
    oracle = make_oracle(cfg.oracle.spec())
    lowest = min(a.get_potential_energy() for a in labels)
    frames = result.candidates.batch.to_atoms()
    energy = np.array([(lab.energy - lowest) if (lab := oracle.label(a)).ok else np.nan
                       for a in frames])
    positions = np.stack([a.positions for a in frames]) if frames else np.zeros((0, 1, 3))
    return {"bias": bias, "depth_eV": strength * (len(labels[0]) if per_atom else 1),
            "width_eV": width, "n_atoms": len(labels[0]), "md_seconds": seconds,
            "frames": len(frames),
            "energy_above_lowest": energy.tolist(),
            "thermal_ceiling": thermal_ceiling(len(labels[0]), TEMPERATURE_K),
            "uncertainty": result.candidates.uncertainty.tolist(),
            "threshold": result.threshold, "rare": rare(kind, positions, config).tolist()}


def summary(m: dict, plain: dict) -> dict:
    """Fractions and medians of one measurement (failed labels count as not thermal);
    ``plain``: the plain-MD measurement of the same case."""
    e = np.array(m["energy_above_lowest"], dtype=float)
    thermal = np.nan_to_num(e, nan=np.inf) <= m["thermal_ceiling"]
    gated = np.array(m["uncertainty"]) > m["threshold"]
    rare_ = np.array(m["rare"], dtype=bool)
    n = max(len(e), 1)
    return {"frames": len(e), "thermal": thermal.sum() / n, "above_gate": gated.sum() / n,
            "useful": (thermal & gated).sum() / n, "rare_thermal": (thermal & rare_).sum() / n,
            "uncertainty": float(np.median(m["uncertainty"]) / np.median(plain["uncertainty"])),
            "median_eV": float(np.nanmedian(e)) if np.isfinite(e).any() else float("nan"),
            "p90_eV": float(np.nanpercentile(e, 90)) if np.isfinite(e).any() else float("nan")}


def plot(results: dict, summaries: dict, path: Path) -> Path:
    """Per setting (x) and case (line): thermal, useful, σ²_F and rare-region fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KEYS), figsize=(15, 4.5))
    for name, rows in results.items():
        for ax, (key, title) in zip(axes, KEYS):
            ax.plot(range(len(rows)), [x[key] for x in summaries[name]], "o-", label=name)
            ax.set_title(title, fontsize=10)
    labels = list(SETTINGS)
    for ax in axes:
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main():
    p = c.bench_args(__doc__.splitlines()[0], "bias_depth")
    args = p.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, (run, kind) in CASES.items():
        run = c.REPO / run
        if not (run / "generations" / "gen_000" / "committee.pt").exists():
            print(f"{name}: {c.relative(run)} not found (run its benchmark first); skipped")
            continue
        for k, (label, bias) in enumerate(SETTINGS.items()):
            cache = work / f"{run.parent.parent.name}_{k}.json"
            if not cache.exists():
                if args.aggregate_only:
                    continue
                print(f"{name}: {label} ...", flush=True)
                c._write_atomic(cache, json.dumps(measure(run, kind, bias)))
            results.setdefault(name, []).append(json.loads(cache.read_text()))
    out = args.out_dir.resolve()
    summaries = {k: [summary(r, v[0]) for r in v] for k, v in results.items()}
    (out / "bias_depth.json").write_text(json.dumps(
        {"cases": CASES, "temperature_K": TEMPERATURE_K, "summary": summaries,
         "results": results}, indent=1))
    figure = plot(results, summaries, out / "bias_depth.png")
    lines = ["# Depth and width of the uncertainty bias: one setting across systems?", "",
             "Command: `python benchmarks/bias_depth.py`. One generation of biased NN-MD at "
             "300 K per setting from the generation-0 committee of a benchmark loop: 8 seeds "
             "spread over the initial data x 2 runs x 1000 steps of 0.5 fs, a frame every 20 "
             "steps, every frame labelled by the loop's oracle (GFN2-xTB). Depth A in k_B T "
             "(the whole molecule's bias) or eV/atom; width B in eV or relative to the "
             "committee's energy spread on the seeds (`bias_width_units: seeds`, "
             "`advsample.samplers.biased_md`). Thermal: oracle energy above the lowest initial "
             "structure at most the harmonic thermal ceiling (mean + 4 std of the potential "
             "energy of 3N - 6 modes at 300 K). Useful: thermal and above the loop's "
             "uncertainty gate. σ²_F: the frames' median over plain MD's. Rare: NH3 near "
             "planar (|umbrella height| < 0.1 Å), alanine φ > 0. Cached in "
             f"`{c.relative(work)}`.", ""]
    for name, rows in results.items():
        lines += [f"## {name} ({rows[0]['n_atoms']} atoms, `{CASES[name][0]}`)", "",
                  f"Thermal ceiling {rows[0]['thermal_ceiling']:.2f} eV.", "",
                  "| setting | A (eV) | B (eV) | frames | thermal | above gate | useful | "
                  "σ²_F / plain | rare and thermal | median E (eV) | 90th pct E (eV) | "
                  "MD seconds |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r, x in zip(SETTINGS, rows, summaries[name]):
            lines.append(f"| {label} | {r['depth_eV']:.3f} | {r['width_eV']:.3g} | "
                         f"{x['frames']} | {x['thermal']:.0%} | {x['above_gate']:.0%} | "
                         f"{x['useful']:.0%} | {x['uncertainty']:.2f} | "
                         f"{x['rare_thermal']:.1%} | {x['median_eV']:.3f} | "
                         f"{x['p90_eV']:.3f} | {r['md_seconds']:.0f} |")
        lines.append("")
    lines += [f"![bias depth]({figure.name})", ""]
    path = c.write_markdown("bias_depth", "\n".join(lines), out)
    print(f"wrote {c.relative(path)}")


if __name__ == "__main__":
    main()
