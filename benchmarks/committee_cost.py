"""What M committee members cost: members evaluated one after another vs all at once.

    OMP_NUM_THREADS=1 python benchmarks/committee_cost.py          # ~5 min
    python benchmarks/committee_cost.py --members 1 4 --repeats 1 --out-dir /tmp/cc  # quick

For M = 1, 2, 4, 8 PaiNN members (the default example's: 32 features, 2 interactions, cutoff
4 Å, float32) and both ways of evaluating them (``Committee.vectorize`` False = the member
loop of the previous version, True = one batched pass), the time of (a) a training step: each
member its own bootstrap minibatch of 16 NH3 structures, energy + forces loss, backward, Adam;
(b) an attack step on 16 NH3 seeds (objective with forces, double backward, Adam on δ); (c) a
Langevin NN-MD step of 32 NH3 runs (stability test). Each setting is timed ``--repeats`` times,
interleaved, and the fastest kept (a busy machine slows every setting alike; the minimum is
the least disturbed). Writes <out-dir>/committee_cost.{json,md}.

    PYTHONPATH=<checkout of an older version>/src python benchmarks/committee_cost.py --md-only

only times the stability evaluation of the issue (4 members, 32 NH3 runs, ``--md-steps``
steps) with whichever advsample is imported, so two versions can be compared.
"""

from __future__ import annotations

import itertools
import time

import common as c
import numpy as np
import torch
from ase.build import molecule
from ase.calculators.emt import EMT

from advsample.attack import AttackConfig, BoltzmannPrior, attack
from advsample.committee import Committee
from advsample.stability import stability_test
from advsample.structures import Batch

MODEL = {"features": 32, "interactions": 2, "cutoff": 4.0, "n_rbf": 16}
TASKS = {"train": "training step", "attack": "attack step", "md": "NN-MD step"}
def labelled_nh3(n: int, seed: int = 0) -> Batch:
    """n rattled NH3 with EMT labels (the cost does not depend on the labels' source)."""
    rng, frames = np.random.default_rng(seed), []
    for _ in range(n):
        a = molecule("NH3")
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        a.get_forces()
        frames.append(a)
    return Batch.from_atoms(frames)


def timed(fn, calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls, after one untimed call."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure(task: str, members: int, vectorize: bool, data: Batch, steps: int,
            compile_: bool = False) -> float:
    """Seconds per step of ``task`` for a committee of ``members`` evaluated either way
    (``compile_``: torch.compile, NN-MD only; the untimed first call compiles)."""
    committee = Committee.build("painn", members, seed=0, **MODEL)
    for m in committee.members:
        m.fit_statistics(data)
    committee.vectorize, committee.compile = vectorize, compile_
    if task == "train":
        from advsample.neighbors import select_pairs
        from advsample.train import TrainConfig, _step_losses, member_training_indices

        cfg = TrainConfig(batch_size=16)
        pairs = committee.members[0].pairs(data, cached=False)
        own = [member_training_indices(data.n_structures, cfg, m)[:16] for m in range(members)]
        batches = [data.select(i) for i in own]
        step_pairs = [select_pairs(pairs, data, i) for i in own]
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in committee.members]
        committee.train()

        def step():
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            _step_losses(committee, list(range(members)), batches, step_pairs, cfg).sum().backward()
            for opt in opts:
                opt.step()

        return timed(step, steps)
    committee.eval()
    if task == "attack":
        prior = BoltzmannPrior.from_training(data, 0.05)
        seeds = data.select(torch.arange(16)).without_labels()
        return timed(lambda: attack(committee, seeds, prior, AttackConfig(steps=steps)), 1) / (
            steps + 1)
    start = data.select([0]).without_labels()
    # an untrained committee breaks bonds: no run may leave the batch, or later steps get cheaper
    return timed(lambda: stability_test(committee, start, 300.0, steps, runs_per_start=32,
                                        floor=1e-9, bond_ceiling=1e9, progress=False),
                 1) / steps


def main() -> None:
    parser = c.bench_args(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=20, help="steps per timing")
    parser.add_argument("--md-only", action="store_true", help="time only a stability test")
    parser.add_argument("--md-steps", type=int, default=2000)
    parser.add_argument("--compile", action="store_true", help="--md-only: torch.compile")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = labelled_nh3(140)
    if args.md_only:
        times = [measure("md", 4, True, data, args.md_steps, args.compile)
                 for _ in range(args.repeats)]
        print(f"stability test, 4 members, 32 NH3 runs: {min(times) * args.md_steps:.1f} s "
              f"for {args.md_steps} steps ({1e3 * min(times):.2f} ms per step)")
        return
    best: dict[tuple, float] = {}
    for _ in range(args.repeats):
        for task, m, vec in itertools.product(TASKS, args.members, (False, True)):
            t = measure(task, m, vec, data, args.steps)
            best[task, m, vec] = min(best.get((task, m, vec), np.inf), t)
            print(f"{task:7s} M={m} {'together' if vec else 'loop':8s} {1e3 * t:8.2f} ms",
                  flush=True)
    rows, summary = [], {}
    for task, m in itertools.product(TASKS, args.members):
        loop, together = best[task, m, False], best[task, m, True]
        one_loop, one_together = best[task, args.members[0], False], best[task,
                                                                            args.members[0], True]
        summary[f"{task}/{m}"] = {"loop_ms": 1e3 * loop, "together_ms": 1e3 * together,
                                  "loop_vs_one": loop / one_loop,
                                  "together_vs_one": together / one_together,
                                  "speedup": loop / together}
        rows.append(f"| {TASKS[task]} | {m} | {1e3 * loop:.1f} | {1e3 * together:.1f} | "
                    f"{loop / one_loop:.2f} | {together / one_together:.2f} | "
                    f"{loop / together:.2f} |")
    settings = {"model": MODEL, "members": args.members, "repeats": args.repeats,
                "steps": args.steps, "threads": torch.get_num_threads(),
                "command": "OMP_NUM_THREADS=1 python benchmarks/committee_cost.py"}
    c.write_json("committee_cost", settings, {}, summary, out_dir=args.out_dir)
    text = "\n".join([
        "# Committee cost: members one after another vs all at once", "",
        f"`{settings['command']}`; PaiNN {MODEL}, float32, {torch.get_num_threads()} thread(s); "
        f"fastest of {args.repeats} interleaved timings of {args.steps} steps each.", "",
        f"| step | M | loop (ms) | together (ms) | loop / M={args.members[0]} | "
        f"together / M={args.members[0]} | speed-up |", "|---|---|---|---|---|---|---|",
        *rows, ""])
    c.write_markdown("committee_cost", text, out_dir=args.out_dir)  # keeps a "## Reading"
    print(text)


if __name__ == "__main__":
    main()
