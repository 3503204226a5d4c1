"""The cost of an attack: per step, batched vs one seed at a time, and scaling with atoms.

    OMP_NUM_THREADS=1 python benchmarks/attack_cost.py              # ~10 min on 2 free cores
    python benchmarks/attack_cost.py --seeds 20 --serial-seeds 2 --steps 4 --cells 1 2 \\
        --work-dir /tmp/ac --out-dir /tmp/ac                          # quick check

(a) time of one attack step / one committee energy + forces + backward pass on the same batch
    (``--seeds`` NH3 seeds; the floor is about 1.0);
(b) attacking ``--seeds`` NH3 seeds in one batched call vs one seed per call, as the original
    code did (the serial time is measured on ``--serial-seeds`` seeds and scaled);
(c) seconds per attack step for periodic Si diamond r x r x r cells (``--cells``), before and
    after ``advsample.runtime.tune_allocator`` (each size in a fresh process, one at a time).
Committee: 4 PaiNN members (features 32, 2 interactions, cutoff 4 Å, float32). Each of the
measurements is cached in <work-dir>/*.json (re-runs skip it; --aggregate-only measures nothing
and falls back to <out-dir>/attack_cost.json). Writes <out-dir>/attack_cost.{json,md} and
attack_cost_scaling.png; --repeats is the number of timed committee passes in (a).
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
NOTES = "(written by hand"


def nh3_batch(n: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    frames = [molecule("NH3") for _ in range(n)]
    for a in frames:
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    batch = Batch.from_atoms(frames, labels=False)
    batch.energy = torch.as_tensor(rng.normal(-100, 0.05, n))
    return batch


def setup(batch: Batch) -> tuple[Committee, BoltzmannPrior, Batch]:
    """A PaiNN committee with statistics fitted on ``batch``, the prior, the seeds."""
    torch.manual_seed(0)
    committee = Committee.build("painn", 4, seed=0, **MODEL)
    for m in committee.members:
        m.fit_statistics(batch.with_labels(batch.energy, None))
    return committee.eval(), BoltzmannPrior.from_training(batch, 0.05), batch.without_labels()


def clock(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed(fn, repeat: int) -> float:
    fn()  # warm-up (neighbour lists, allocator)
    return clock(lambda: [fn() for _ in range(repeat)]) / repeat


def step_ratio(n_seeds: int, steps: int, passes: int) -> dict:
    committee, prior, seeds = setup(nh3_batch(n_seeds))
    for p in committee.parameters():
        p.requires_grad_(False)

    def committee_pass():  # energies, forces (graph kept), backward of the force variance
        b = seeds.with_positions(seeds.positions.detach().requires_grad_(True))
        out = committee(b, create_graph=True)
        force_variance(out.forces, b.structure, b.n_structures).sum().backward()

    t_pass = timed(committee_pass, passes)
    cfg = AttackConfig(steps=steps, max_displacement=0.6, min_distance=0.7)
    t_step = timed(lambda: attack(committee, seeds, prior, cfg), 1) / (steps + 1)
    return {"seeds": n_seeds, "committee_pass_s": t_pass, "attack_step_s": t_step,
            "ratio": t_step / t_pass}


def batched_speedup(n_seeds: int, serial_seeds: int, steps: int) -> dict:
    committee, prior, seeds = setup(nh3_batch(n_seeds, seed=1))
    cfg = AttackConfig(steps=steps, max_displacement=0.6, min_distance=0.7)
    t_batched = clock(lambda: attack(committee, seeds, prior, cfg))
    t_serial = clock(lambda: [attack(committee, seeds.select([k]), prior, cfg)
                              for k in range(serial_seeds)]) * n_seeds / serial_seeds
    return {"seeds": n_seeds, "steps": steps, "batched_s": t_batched,
            "serial_s_estimated": t_serial, "serial_seeds_measured": serial_seeds,
            "speedup": t_serial / t_batched}


def scaling_point(r: int, steps: int, tuned: bool) -> dict:
    """Seconds per attack step on an r x r x r Si supercell (fresh process, 1 thread)."""
    torch.set_num_threads(1)
    if tuned:
        tune_allocator()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((r, r, r))
    atoms.rattle(0.05, seed=r)
    batch = Batch.from_atoms([atoms], labels=False)
    batch.energy = torch.tensor([-5.0 * len(atoms)], dtype=torch.float64)
    committee, prior, seeds = setup(batch)
    cfg = AttackConfig(steps=steps, max_displacement=0.3)
    seconds = clock(lambda: attack(committee, seeds, prior, cfg)) / (steps + 1)
    return {"atoms": len(atoms), "seconds_per_step": seconds}


def in_fresh_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


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

    n, t, t_old = (np.array([row[k] for row in r[s]]) for s, k in (
        ("scaling", "atoms"), ("scaling", "seconds_per_step"),
        ("scaling_default_allocator", "seconds_per_step")))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(n, t_old, "s:", color="0.5", label="before (default malloc)")
    ax.loglog(n, t, "o-", label="after (tuned allocator)")
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
    p.add_argument("--steps", type=int, default=20, help="attack steps in (a), (b); (c): /4")
    p.add_argument("--cells", type=int, nargs="+", default=[3, 4, 6, 8, 10],
                   help="Si supercells r x r x r in (c)")
    args = p.parse_args(argv)
    work, out, steps = Path(args.work_dir), Path(args.out_dir), max(3, args.steps // 4)
    settings = {"seeds": args.seeds, "serial_seeds": args.serial_seeds, "steps": args.steps,
                "cells": args.cells, "passes": args.repeats, "threads": torch.get_num_threads(),
                "command": " ".join(["python benchmarks/attack_cost.py",
                                     *(sys.argv[1:] if argv is None else argv)])}

    def cached(name: str, fn, *fn_args) -> dict | None:
        path = work / f"{name}.json"
        if not path.exists() and not args.aggregate_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fn(*fn_args)))
            print(name, path.read_text(), flush=True)
        return json.loads(path.read_text()) if path.exists() else None

    scaling = {(r, tuned): cached(f"scaling_{r}_{steps}_{'tuned' if tuned else 'default'}",
                                  in_fresh_process, scaling_point, r, steps, tuned)
               for r in args.cells for tuned in (False, True)}
    tune_allocator()
    step = cached(f"step_{args.seeds}_{args.steps}_{args.repeats}", step_ratio, args.seeds,
                  args.steps, args.repeats)
    batched = cached(f"batched_{args.seeds}_{args.serial_seeds}_{args.steps}",
                     batched_speedup, args.seeds, args.serial_seeds, args.steps)
    if None in (step, batched, *scaling.values()):  # --aggregate-only without measurements
        old = json.loads((out / "attack_cost.json").read_text())
        print(f"no measurements in {c.relative(work)}: rewriting {c.relative(out)} from its "
              "attack_cost.json", flush=True)
        settings, result = old["settings"], old["summary"]
    else:
        result = {"step_over_committee_pass": step["ratio"], "batched_speedup": batched["speedup"],
                  "scaling": [scaling[r, True] for r in args.cells],
                  "scaling_default_allocator": [scaling[r, False] for r in args.cells],
                  "details": {"step": step, "batched": batched}}
    md = out / "attack_cost.md"
    text = md.read_text() if md.exists() else ""
    notes = text[text.rfind("\n", 0, text.find(NOTES)) + 1:] if NOTES in text else ""
    if notes and not args.aggregate_only:
        print(f"kept the hand-written notes of {c.relative(md)}: check them against the numbers")
    c.write_json("attack_cost", settings, {}, result, out)
    plot(result, out / "attack_cost_scaling.png")
    print(c.write_markdown("attack_cost", markdown(result, settings, notes), out).read_text())


if __name__ == "__main__":
    main()
