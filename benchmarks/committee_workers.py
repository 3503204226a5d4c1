"""What M committee members cost in wall time when W worker processes share them.

    python benchmarks/committee_workers.py      # ~3 min on an idle 2-core machine

The splits of ``train.parallel`` and ``sampler.parallel`` (docs/benchmarks/example_time.md),
W processes of one torch thread each, stepping at the same time: a training step (16 NH3
structures per member) with the M members in W groups (``advsample.chunks``), each group a
committee of its own; an attack step on 16 seeds and an NN-MD step of 32 NH3 runs (the MD
sampler's; the stability evaluator does not split its runs) with all M members and the
seeds or runs in W chunks. Steps as in benchmarks/committee_cost.py (the default example's
PaiNN, eager "together" evaluation; ``--compiled`` adds compiled ones). Per setting: the wall time
from the first worker's start to the last one's end of ``--steps`` steps (after one untimed
call each and a barrier), per step, fastest of ``--repeats``. Against it: one process with
one member at 1 thread and at W threads (the issue's reference used 2 threads), and M
members in one process at W threads. Wall times need an otherwise idle machine. Writes
<out-dir>/committee_workers.{json,md}.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time

import common as c
import numpy as np
from committee_cost import TASKS, labelled_nh3, task_steps

from advsample.chunks import chunks

CONTEXT = multiprocessing.get_context("spawn")


def _worker(task: str, members: int, structures: int | None, mode: str, threads: int,
            steps: int, barrier, queue) -> None:
    """One process: warm up, wait for the others, time ``steps`` steps (wall clock)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    run = task_steps(task, members, mode, labelled_nh3(140), steps, structures)
    run()  # untimed: first-call costs (and compiling)
    barrier.wait()
    start = time.perf_counter()  # CLOCK_MONOTONIC: comparable between processes on Linux
    run()
    queue.put((start, time.perf_counter()))


def wall_per_step(task: str, parts: list[tuple[int, int | None]], mode: str, threads: int,
                  steps: int) -> float:
    """Seconds per step when len(parts) processes, process k with parts[k] = (members,
    structures) and ``threads`` threads each, step at the same time: first start to last
    end, / steps."""
    barrier, queue = CONTEXT.Barrier(len(parts)), CONTEXT.Queue()
    procs = [CONTEXT.Process(target=_worker, args=(task, m, n, mode, threads, steps, barrier,
                                                   queue)) for m, n in parts]
    for p in procs:
        p.start()
    spans = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a worker of {task} {parts} exited with {p.exitcode}")
    return (max(e for _, e in spans) - min(s for s, _ in spans)) / steps


def settings_for(task: str, members: int, workers: int) -> dict[str, tuple[list, int]]:
    """name -> ((members, structures) per process, threads per process) of the compared
    settings; structures None: the task's default (16 seeds, 32 runs)."""
    if task == "train":
        split = [(len(g), None) for g in chunks(members, workers)]
    else:
        total = 16 if task == "attack" else 32
        split = [(members, len(g)) for g in chunks(total, workers)]
    return {"1 member, 1 thread": ([(1, None)], 1),
            f"1 member, {workers} threads": ([(1, None)], workers),
            f"{members} members, 1 process, {workers} threads": ([(members, None)], workers),
            f"{members} members, {workers} workers": (split, 1)}


def main() -> None:
    parser = c.bench_args(__doc__.splitlines()[0], repeats=2)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--workers-per-run", type=int, default=2, dest="workers_per_run",
                        help="worker processes sharing the members (W)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--compiled", action="store_true", help="also compiled steps")
    args = parser.parse_args()
    modes = ["together", "compiled"] if args.compiled else ["together"]
    best: dict[tuple, float] = {}
    for _ in range(args.repeats):
        for task, mode in itertools.product(TASKS, modes):
            settings = settings_for(task, args.members, args.workers_per_run)
            for name, (parts, threads) in settings.items():
                t = wall_per_step(task, parts, mode, threads, args.steps)
                best[task, mode, name] = min(best.get((task, mode, name), np.inf), t)
                print(f"{task:7s} {mode:8s} {name:32s} {1e3 * t:8.2f} ms", flush=True)
    names = list(settings_for("train", args.members, args.workers_per_run))
    one_1, one_w, _, split = names
    rows, summary = [], {}
    for task, mode in itertools.product(TASKS, modes):
        ms = {n: 1e3 * best[task, mode, n] for n in names}
        summary[f"{task}/{mode}"] = {**{f"{n} (ms)": v for n, v in ms.items()},
                                     "workers / 1 member 1 thread": ms[split] / ms[one_1],
                                     f"workers / 1 member {args.workers_per_run} threads":
                                         ms[split] / ms[one_w]}
        rows.append(f"| {TASKS[task]} | {mode} | " + " | ".join(f"{ms[n]:.1f}" for n in names)
                    + f" | {ms[split] / ms[one_1]:.2f} | {ms[split] / ms[one_w]:.2f} |")
    config = {"members": args.members, "workers": args.workers_per_run, "steps": args.steps,
              "repeats": args.repeats, "modes": modes,
              "command": "python benchmarks/committee_workers.py"}
    c.write_json("committee_workers", config, {}, summary, out_dir=args.out_dir)
    text = "\n".join([
        "# Committee cost on worker processes: wall time per step", "",
        f"`{config['command']}`: PaiNN (the default example's), {args.members} members "
        f"shared by {args.workers_per_run} worker processes of 1 thread each, stepping at "
        f"the same time; wall milliseconds per step, fastest of {args.repeats} runs of "
        f"{args.steps} steps. See the script's docstring for what each step is.", "",
        "| step | mode | " + " | ".join(f"{n} (ms)" for n in names)
        + f" | workers / {one_1} | workers / {one_w} |",
        "|---|---|" + "---|" * (len(names) + 2), *rows, ""])
    c.write_markdown("committee_workers", text, out_dir=args.out_dir)
    print(text)


if __name__ == "__main__":
    main()
