"""The cost of an attack: per step, batched vs one seed at a time, and scaling with atoms.

    python benchmarks/attack_cost.py            # ~10 min on 2 cores

(a) time of one attack step / time of one committee energy + forces + backward pass on the
    same batch (1,000 NH3 seeds; the floor is about 1.0);
(b) attacking 1,000 NH3 seeds in one batched call vs one seed per call, as the original code
    did (the serial time is measured on ``--serial-seeds`` seeds and scaled to 1,000);
(c) seconds per attack step for periodic Si diamond cells from 216 to 8,000 atoms, before
    and after ``advsample.runtime.tune_allocator`` (each size in a fresh process).
Writes docs/benchmarks/attack_cost.{json,md}. Committee: 4 PaiNN members (features 32,
2 interactions, cutoff 4 Å, float32), the default run's model.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk, molecule

from advsample.attack import AttackConfig, BoltzmannPrior, attack
from advsample.committee import Committee
from advsample.runtime import tune_allocator
from advsample.structures import Batch
from advsample.uncertainty import force_variance

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
MODEL = {"features": 32, "interactions": 2, "cutoff": 4.0, "n_rbf": 16}


def nh3_batch(n: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = molecule("NH3")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        frames.append(a)
    batch = Batch.from_atoms(frames, labels=False)
    batch.energy = torch.as_tensor(rng.normal(-100, 0.05, n))
    return batch


def committee_for(batch: Batch) -> Committee:
    c = Committee.build("painn", 4, seed=0, **MODEL)
    labelled = batch.with_labels(batch.energy if batch.energy is not None else torch.zeros(
        batch.n_structures, dtype=batch.dtype), None)
    for m in c.members:
        m.fit_statistics(labelled)
    return c.eval()


def committee_pass(committee: Committee, batch: Batch) -> None:
    """Energies, forces (graph kept) and a backward pass of the force variance."""
    pos = batch.positions.detach().requires_grad_(True)
    b = batch.with_positions(pos)
    out = committee(b, create_graph=True)
    force_variance(out.forces, b.structure, b.n_structures).sum().backward()


def timed(fn, repeat: int) -> float:
    fn()  # warm-up (neighbour lists, allocator)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def step_ratio(n_seeds: int, steps: int) -> dict:
    batch = nh3_batch(n_seeds)
    committee = committee_for(batch)
    prior = BoltzmannPrior.from_training(batch, 0.05)
    seeds = batch.without_labels()
    for p in committee.parameters():
        p.requires_grad_(False)
    t_pass = timed(lambda: committee_pass(committee, seeds), 5)
    cfg = AttackConfig(steps=steps, max_displacement=0.6, min_distance=0.7)
    t_attack = timed(lambda: attack(committee, seeds, prior, cfg), 1) / (steps + 1)
    return {"seeds": n_seeds, "committee_pass_s": t_pass, "attack_step_s": t_attack,
            "ratio": t_attack / t_pass}


def batched_speedup(n_seeds: int, serial_seeds: int, steps: int) -> dict:
    batch = nh3_batch(n_seeds, seed=1)
    committee = committee_for(batch)
    prior = BoltzmannPrior.from_training(batch, 0.05)
    seeds = batch.without_labels()
    cfg = AttackConfig(steps=steps, max_displacement=0.6, min_distance=0.7)
    start = time.perf_counter()
    attack(committee, seeds, prior, cfg)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    for k in range(serial_seeds):
        attack(committee, seeds.select([k]), prior, cfg)
    t_serial = (time.perf_counter() - start) * n_seeds / serial_seeds
    return {"seeds": n_seeds, "steps": steps, "batched_s": t_batched,
            "serial_s_estimated": t_serial, "serial_seeds_measured": serial_seeds,
            "speedup": t_serial / t_batched}


def _scaling_point(r: int, steps: int, tuned: bool) -> dict:
    """Seconds per attack step on an r x r x r Si supercell (fresh process, 1 thread)."""
    torch.set_num_threads(1)
    if tuned:
        tune_allocator()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((r, r, r))
    atoms.rattle(0.05, seed=r)
    batch = Batch.from_atoms([atoms], labels=False)
    batch.energy = torch.tensor([-5.0 * len(atoms)], dtype=torch.float64)
    committee = committee_for(batch)
    prior = BoltzmannPrior.from_training(batch, 0.05)
    cfg = AttackConfig(steps=steps, max_displacement=0.3)
    seeds = batch.without_labels()
    start = time.perf_counter()
    attack(committee, seeds, prior, cfg)
    return {"atoms": len(atoms), "seconds_per_step": (time.perf_counter() - start) / (steps + 1)}


def scaling(repeats: list[int], steps: int) -> tuple[list[dict], list[dict]]:
    """(default allocator, tuned allocator) rows; each size runs in a fresh spawned process
    with the default allocator and then with the tuned one, so both see the same load."""
    before, after = [], []
    context = multiprocessing.get_context("spawn")
    for r in repeats:
        for tuned, rows in ((False, before), (True, after)):
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                rows.append(pool.submit(_scaling_point, r, steps, tuned).result())
            print({"allocator": "tuned" if tuned else "default", **rows[-1]}, flush=True)
    return before, after


def write(result: dict, path: Path, command: str) -> None:
    (path / "attack_cost.json").write_text(json.dumps(result, indent=1))
    a, b = result["details"]["step"], result["details"]["batched"]
    lines = ["# Cost of an attack", "", f"Command: `{command}`", "",
             f"Torch threads: {result['settings']['threads']}; committee: 4 PaiNN members "
             f"{json.dumps(MODEL)}, float32.", "",
             "| quantity | value |", "|---|---|",
             f"| attack step / committee E+F+backward pass ({a['seeds']} NH3) | "
             f"{result['step_over_committee_pass']:.2f} ({a['attack_step_s'] * 1e3:.1f} ms vs "
             f"{a['committee_pass_s'] * 1e3:.1f} ms) |",
             f"| batched attack of {b['seeds']} NH3 seeds ({b['steps']} steps) | "
             f"{b['batched_s']:.1f} s |",
             f"| one seed per call, scaled from {b['serial_seeds_measured']} seeds | "
             f"{b['serial_s_estimated']:.0f} s |",
             f"| batched speed-up | {result['batched_speedup']:.0f}x |", "",
             "## Attack step time vs cell size (Si diamond, periodic)", "",
             "Each size in a fresh process. *before*: glibc's default malloc, which returns "
             "every large freed tensor to the kernel so the next step page-faults it in "
             "again; *after*: `advsample.runtime.tune_allocator()` (what the CLI does), "
             "which keeps freed blocks in the heap.", "",
             "| atoms | before: s per step | after: s per step | after: µs per atom | "
             "speed-up |", "|---|---|---|---|---|"]
    for old, row in zip(result["scaling_default_allocator"], result["scaling"], strict=True):
        lines.append(f"| {row['atoms']} | {old['seconds_per_step']:.3f} | "
                     f"{row['seconds_per_step']:.3f} | "
                     f"{row['seconds_per_step'] / row['atoms'] * 1e6:.1f} | "
                     f"{old['seconds_per_step'] / row['seconds_per_step']:.2f}x |")
    lines += ["", "![scaling](attack_cost_scaling.png)", ""]
    (path / "attack_cost.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["atoms"] for r in result["scaling"]])
    t = np.array([r["seconds_per_step"] for r in result["scaling"]])
    t_old = np.array([r["seconds_per_step"] for r in result["scaling_default_allocator"]])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(n, t_old, "s:", color="0.5", label="before (default malloc)")
    ax.loglog(n, t, "o-", label="after (tuned allocator)")
    ax.loglog(n, t[0] * n / n[0], "k--", label="linear")
    ax.set_xlabel("atoms in the cell")
    ax.set_ylabel("seconds per attack step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path / "attack_cost_scaling.png", dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1000)
    p.add_argument("--serial-seeds", type=int, default=50)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, nargs="+", default=[3, 4, 6, 8, 10])
    p.add_argument("--out", type=Path, default=DOCS)
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    scaling_steps = max(3, args.steps // 4)
    before, after = scaling(args.repeats, scaling_steps)
    tune_allocator()
    step = step_ratio(args.seeds, args.steps)
    print(step, flush=True)
    batched = batched_speedup(args.seeds, args.serial_seeds, args.steps)
    print(batched, flush=True)
    result = {
        "step_over_committee_pass": step["ratio"],
        "batched_speedup": batched["speedup"],
        "scaling": after,
        "scaling_default_allocator": before,
        "settings": {**vars(args), "out": str(args.out), "threads": torch.get_num_threads()},
        "details": {"step": step, "batched": batched},
    }
    write(result, args.out, "python benchmarks/attack_cost.py " + " ".join(argv or []))


if __name__ == "__main__":
    main()
