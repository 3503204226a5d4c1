"""What M committee members cost: one after another, all at once, and all at once compiled.

    OMP_NUM_THREADS=1 python benchmarks/committee_cost.py          # ~15 min
    python benchmarks/committee_cost.py --members 1 4 --repeats 1 --out-dir /tmp/cc  # quick

For M = 1, 2, 4, 8 PaiNN members (the default example's: 32 features, 2 interactions, cutoff
4 Å, float32) and three ways of evaluating them (loop: ``Committee.vectorize`` False, the
member loop of the first version; together: one batched eager pass; compiled: together with
``Committee.compile``, derivatives inside the compiled graph), the time of (a) a training
step: each member its own minibatch of 16 NH3 structures, energy + forces loss, backward,
Adam; (b) an attack step on 16 NH3 seeds (objective with forces, its gradient, Adam on δ);
(c) a Langevin NN-MD step of 32 NH3 runs (stability test). Each setting is timed
``--repeats`` times, interleaved, and the fastest kept; times are CPU seconds of the one
benchmark thread (``OMP_NUM_THREADS=1``), so other work on the machine does not inflate
them. Writes <out-dir>/committee_cost.{json,md}.

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


def timed(fn, calls: int) -> tuple[float, float]:
    """(CPU seconds per call of ``fn`` over ``calls`` calls, CPU seconds of one first untimed
    call (which compiles, when compiled)). CPU time of this process, not wall time: with one
    thread it measures the work done whatever else runs on the machine."""
    start = time.process_time()
    fn()
    first = time.process_time() - start
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls, first


MODES = {"loop": (False, False), "together": (True, False), "compiled": (True, True)}


def task_steps(task: str, members: int, mode: str, data: Batch, steps: int,
               structures: int | None = None):
    """A function running ``steps`` steps of ``task`` for a committee of ``members`` evaluated
    the way ``mode`` names: one member after another (loop), together (one batched pass), or
    together through torch.compile (compiled). Setting up is not part of it. ``structures``:
    attack seeds (default 16) or NN-MD runs (default 32); training steps take 16 structures
    per member."""
    committee = Committee.build("painn", members, seed=0, **MODEL)
    for m in committee.members:
        m.fit_statistics(data)
    committee.vectorize, committee.compile = MODES[mode]
    if task == "train":
        from advsample.neighbors import select_pairs
        from advsample.train import TrainConfig, _step_backward, member_training_indices

        cfg = TrainConfig(batch_size=16)
        pairs = committee.members[0].pairs(data, cached=False)
        own = [member_training_indices(data.n_structures, cfg, m)[:16] for m in range(members)]
        batches = [data.select(i) for i in own]
        step_pairs = [select_pairs(pairs, data, i) for i in own]
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)  # as train.fit does
                for m in committee.members]
        committee.train()

        def train_steps():
            """``steps`` training steps of every member."""
            for _ in range(steps):
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                _step_backward(committee, list(range(members)), batches, step_pairs, cfg)
                for opt in opts:
                    opt.step()
                committee.weights_changed()

        return train_steps
    committee.eval()
    if task == "attack":
        prior = BoltzmannPrior.from_training(data, 0.05)
        seeds = data.select(torch.arange(structures or 16)).without_labels()
        return lambda: attack(committee, seeds, prior, AttackConfig(steps=steps))
    start = data.select([0]).without_labels()
    # an untrained committee breaks bonds: no run may leave the batch, or later steps get cheaper
    return lambda: stability_test(committee, start, 300.0, steps,
                                  runs_per_start=structures or 32, floor=1e-9,
                                  bond_ceiling=1e9, progress=False)


def measure(task: str, members: int, mode: str, data: Batch, steps: int) -> tuple[float, float]:
    """(CPU seconds per step of ``task`` (see :func:`task_steps`), CPU seconds of a first
    untimed call of ``steps`` steps (which compiles, when compiled))."""
    per_call, first = timed(task_steps(task, members, mode, data, steps), 1)
    return per_call / steps, first


def main() -> None:
    parser = c.bench_args(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=20, help="steps per timing")
    parser.add_argument("--md-only", action="store_true", help="time only a stability test")
    parser.add_argument("--md-steps", type=int, default=2000)
    parser.add_argument("--compile", action="store_true", help="--md-only: compiled")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = labelled_nh3(140)
    if args.md_only:
        mode = "compiled" if args.compile else "together"
        times = [measure("md", 4, mode, data, args.md_steps)[0] for _ in range(args.repeats)]
        print(f"stability test, 4 members, 32 NH3 runs: {min(times) * args.md_steps:.1f} CPU s "
              f"for {args.md_steps} steps ({1e3 * min(times):.2f} CPU ms per step)")
        return
    best: dict[tuple, float] = {}
    first: dict[tuple, float] = {}
    for _ in range(args.repeats):
        for task, m, mode in itertools.product(TASKS, args.members, MODES):
            t, t_first = measure(task, m, mode, data, args.steps)
            best[task, m, mode] = min(best.get((task, m, mode), np.inf), t)
            first[task, m, mode] = max(first.get((task, m, mode), 0.0), t_first)
            print(f"{task:7s} M={m} {mode:8s} {1e3 * t:8.2f} ms (first call {t_first:.1f} s)",
                  flush=True)
    rows, summary = [], {}
    one = args.members[0]
    for task, m in itertools.product(TASKS, args.members):
        ms = {mode: 1e3 * best[task, m, mode] for mode in MODES}
        ratio = {mode: best[task, m, mode] / best[task, one, mode] for mode in MODES}
        vs_eager_one = best[task, m, "compiled"] / best[task, one, "together"]
        summary[f"{task}/{m}"] = {**{f"{mode}_ms": v for mode, v in ms.items()},
                                  **{f"{mode}_vs_one": v for mode, v in ratio.items()},
                                  "compiled_vs_together_one": vs_eager_one,
                                  "compiled_first_call_s": first[task, m, "compiled"]}
        rows.append(f"| {TASKS[task]} | {m} | {ms['loop']:.1f} | {ms['together']:.1f} | "
                    f"{ms['compiled']:.1f} | {ratio['loop']:.2f} | {ratio['together']:.2f} | "
                    f"{ratio['compiled']:.2f} | {vs_eager_one:.2f} |")
    settings = {"model": MODEL, "members": args.members, "repeats": args.repeats,
                "steps": args.steps, "threads": torch.get_num_threads(),
                "command": "OMP_NUM_THREADS=1 python benchmarks/committee_cost.py"}
    c.write_json("committee_cost", settings, {}, summary, out_dir=args.out_dir)
    text = "\n".join([
        "# Committee cost: members one after another, all at once, and compiled", "",
        f"`{settings['command']}`; PaiNN {MODEL}, float32, {torch.get_num_threads()} thread(s); "
        f"fastest of {args.repeats} interleaved timings of {args.steps} steps each, in CPU "
        "milliseconds of the one thread (other work on the machine does not count). loop: one "
        "member after another; together: one batched pass over the members (eager); "
        "compiled: together, through torch.compile with the derivatives inside the compiled "
        "graph (`committee.compile: true`; compiling is not in these times).", "",
        f"| step | M | loop (ms) | together (ms) | compiled (ms) | loop / M={one} | "
        f"together / M={one} | compiled / M={one} | compiled / together M={one} |",
        "|---|---|---|---|---|---|---|---|---|", *rows, ""])
    c.write_markdown("committee_cost", text, out_dir=args.out_dir)  # keeps a "## Reading"
    print(text)


if __name__ == "__main__":
    main()
