"""The cost of an attack: per step, batched vs one seed at a time, and scaling with atoms.

    OMP_NUM_THREADS=1 python benchmarks/attack_cost.py      # ~10 min on 2 free cores
    python benchmarks/attack_cost.py --seeds 20 --serial-seeds 2 --steps 4 --cells 1 2 \\
        --work-dir /tmp/ac --out-dir /tmp/ac                  # quick check

(a) attack step / committee energy + forces + backward pass on ``--seeds`` NH3 seeds (the pass
timed --repeats times); (b) those seeds attacked in one batched call vs one per call (timed on
``--serial-seeds``, scaled); (c) s per attack step on Si diamond r x r x r cells (``--cells``)
before/after ``advsample.runtime.tune_allocator``, each in a fresh process. Committee: 4 PaiNN
(features 32, 2 interactions, cutoff 4 Å, float32). Measurements are cached in <work-dir>;
--aggregate-only measures nothing (no cache: rewrites from <out-dir>/attack_cost.json).
Writes <out-dir>/attack_cost.{json,md} and attack_cost_scaling.png.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import common as c
import numpy as np
import torch
from ase.build import bulk, molecule

from advsample.attack import AttackConfig, BoltzmannPrior, attack
from advsample.committee import Committee
from advsample.runtime import tune_allocator
from advsample.structures import Batch
from advsample.uncertainty import force_variance

MODEL = {"features": 32, "interactions": 2, "cutoff": 4.0, "n_rbf": 16}
NOTES = "(written by hand"  # a hand-written reading in the .md, kept by --aggregate-only


def setup(frames: list, energy: np.ndarray) -> tuple[Committee, BoltzmannPrior, Batch]:
    """A PaiNN committee with statistics fitted on ``frames``, the prior and the seeds."""
    batch = Batch.from_atoms(frames, labels=False)
    batch.energy = torch.as_tensor(energy, dtype=torch.float64)
    committee = Committee.build("painn", 4, seed=0, **MODEL)
    for m in committee.members:
        m.fit_statistics(batch.with_labels(batch.energy, None))
    return committee.eval(), BoltzmannPrior.from_training(batch, 0.05), batch.without_labels()


def nh3(n: int, seed: int) -> tuple[Committee, BoltzmannPrior, Batch]:
    rng, frames = np.random.default_rng(seed), [molecule("NH3") for _ in range(n)]
    for a in frames:
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    return setup(frames, rng.normal(-100, 0.05, n))


def clock(fn, repeat: int = 1, warm_up: bool = False) -> float:
    """Mean seconds of ``fn()`` over ``repeat`` calls, after one untimed call if warm_up."""
    if warm_up:
        fn()  # neighbour lists, allocator
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def nh3_timings(n_seeds: int, serial_seeds: int, steps: int, passes: int) -> dict:
    """(a) attack step vs committee pass and (b) batched vs serial attacks on NH3 seeds."""
    committee, prior, seeds = nh3(n_seeds, 0)
    cfg = AttackConfig(steps=steps, max_displacement=0.6, min_distance=0.7)
    committee.requires_grad_(False)

    def committee_pass():  # energies, forces (graph kept), backward of the force variance
        b = seeds.with_positions(seeds.positions.detach().requires_grad_(True))
        out = committee(b, create_graph=True)
        force_variance(out.forces, b.structure, b.n_structures).sum().backward()

    t_pass = clock(committee_pass, passes, warm_up=True)
    t_step = clock(lambda: attack(committee, seeds, prior, cfg), warm_up=True) / (steps + 1)
    committee, prior, seeds = nh3(n_seeds, 1)  # (b) on other seeds, parameters trainable
    t_batched = clock(lambda: attack(committee, seeds, prior, cfg))
    t_serial = clock(lambda: [attack(committee, seeds.select([k]), prior, cfg)
                              for k in range(serial_seeds)]) * n_seeds / serial_seeds
    return {"step": {"seeds": n_seeds, "committee_pass_s": t_pass, "attack_step_s": t_step,
                     "ratio": t_step / t_pass},
            "batched": {"seeds": n_seeds, "steps": steps, "batched_s": t_batched,
                        "serial_s_estimated": t_serial, "serial_seeds_measured": serial_seeds,
                        "speedup": t_serial / t_batched}}


def scaling_point(r: int, steps: int, tuned: bool) -> dict:
    """Seconds per attack step on an r x r x r Si supercell (run in a fresh process)."""
    torch.set_num_threads(1)
    if tuned:
        tune_allocator()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((r, r, r))
    atoms.rattle(0.05, seed=r)
    committee, prior, seeds = setup([atoms], np.array([-5.0 * len(atoms)]))
    cfg = AttackConfig(steps=steps, max_displacement=0.3)
    return {"atoms": len(atoms),
            "seconds_per_step": clock(lambda: attack(committee, seeds, prior, cfg)) / (steps + 1)}


def in_fresh_process(*args) -> dict:
    """scaling_point(*args) in a new process, so each allocator setting starts clean."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(scaling_point, *args).result()


def markdown(r: dict, settings: dict, notes: str) -> str:
    a, b = r["details"]["step"], r["details"]["batched"]
    rows = "".join(
        f"| {new['atoms']} | {old['seconds_per_step']:.3f} | {new['seconds_per_step']:.3f} | "
        f"{new['seconds_per_step'] / new['atoms'] * 1e6:.1f} | "
        f"{old['seconds_per_step'] / new['seconds_per_step']:.2f}x |\n"
        for old, new in zip(r["scaling_default_allocator"], r["scaling"], strict=True))
    return (
        f"# Cost of an attack\n\nCommand: `{settings['command']}`\n\nTorch threads: "
        f"{settings['threads']}; committee: 4 PaiNN members {json.dumps(MODEL)}, float32.\n\n"
        "| quantity | value |\n|---|---|\n"
        f"| attack step / committee E+F+backward pass ({a['seeds']} NH3) | {a['ratio']:.2f} "
        f"({a['attack_step_s'] * 1e3:.1f} ms vs {a['committee_pass_s'] * 1e3:.1f} ms) |\n"
        f"| batched attack of {b['seeds']} NH3 seeds ({b['steps']} steps) | "
        f"{b['batched_s']:.1f} s |\n| one seed per call, scaled from "
        f"{b['serial_seeds_measured']} seeds | {b['serial_s_estimated']:.0f} s |\n"
        f"| batched speed-up | {b['speedup']:.0f}x |\n\n"
        "## Attack step time vs cell size (Si diamond, periodic)\n\nEach size in a fresh "
        "process. *before*: glibc's default malloc, which returns every large freed tensor to "
        "the kernel so the next step page-faults it in again; *after*: "
        "`advsample.runtime.tune_allocator()` (what the CLI does), which keeps freed blocks in "
        "the heap.\n\n| atoms | before: s per step | after: s per step | after: µs per atom | "
        "speed-up |\n|---|---|---|---|---|\n" + rows
        + "\n![scaling](attack_cost_scaling.png)\n\n" + notes)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([row["atoms"] for row in r["scaling"]])
    fig, ax = plt.subplots(figsize=(5, 4))
    for key, style, label in (("scaling_default_allocator", "s:", "before (default malloc)"),
                              ("scaling", "o-", "after (tuned allocator)")):
        t = np.array([row["seconds_per_step"] for row in r[key]])
        ax.loglog(n, t, style, label=label, color="0.5" if ":" in style else "C0")
    ax.loglog(n, t[0] * n / n[0], "k--", label="linear")
    ax.set(xlabel="atoms in the cell", ylabel="seconds per attack step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    p = c.bench_args(__doc__.splitlines()[0], "attack_cost", repeats=5)
    p.add_argument("--seeds", type=int, default=1000, help="NH3 seeds in (a) and (b)")
    p.add_argument("--serial-seeds", type=int, default=50, help="seeds timed one by one (b)")
    p.add_argument("--steps", type=int, default=20, help="attack steps in (a), (b)")
    p.add_argument("--cells", type=int, nargs="+", default=[3, 4, 6, 8, 10], help="r in (c)")
    args = p.parse_args(argv)
    work, out, a = Path(args.work_dir), Path(args.out_dir), args
    settings = {"seeds": a.seeds, "serial_seeds": a.serial_seeds, "steps": a.steps,
                "cells": a.cells, "passes": a.repeats, "threads": torch.get_num_threads(),
                "command": " ".join(["python benchmarks/attack_cost.py",
                                     *(f for f in (sys.argv[1:] if argv is None else argv)
                                       if f != "--aggregate-only")])}

    def cached(name: str, fn, *fn_args) -> dict | None:
        path = work / f"{name}.json"
        if not path.exists() and not a.aggregate_only:
            torch.manual_seed(0)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fn(*fn_args)))
            print(name, path.read_text(), flush=True)
        return json.loads(path.read_text()) if path.exists() else None

    steps = max(3, a.steps // 4)
    scaling = {(r, tuned): cached(f"scaling_{r}_{steps}_{'tuned' if tuned else 'default'}",
                                  in_fresh_process, r, steps, tuned)
               for r in a.cells for tuned in (False, True)}
    tune_allocator()
    nh3_ = cached(f"nh3_{a.seeds}_{a.serial_seeds}_{a.steps}_{a.repeats}", nh3_timings,
                  a.seeds, a.serial_seeds, a.steps, a.repeats)
    if None in (nh3_, *scaling.values()):  # --aggregate-only without measurements
        print(f"nothing cached in {c.relative(work)}: using {c.relative(out)}/attack_cost.json")
        old = json.loads((out / "attack_cost.json").read_text())
        settings, result = old["settings"], old["summary"]
    else:
        result = {"step_over_committee_pass": nh3_["step"]["ratio"],
                  "batched_speedup": nh3_["batched"]["speedup"],
                  "scaling": [scaling[r, True] for r in a.cells],
                  "scaling_default_allocator": [scaling[r, False] for r in a.cells],
                  "details": nh3_}
    md = out / "attack_cost.md"
    text = md.read_text() if md.exists() and a.aggregate_only else ""
    notes = text[text.rfind("\n", 0, text.find(NOTES)) + 1:] if NOTES in text else ""
    c.write_json("attack_cost", settings, {}, result, out)
    plot(result, out / "attack_cost_scaling.png")
    print(c.write_markdown("attack_cost", markdown(result, settings, notes), out).read_text())


if __name__ == "__main__":
    main()
