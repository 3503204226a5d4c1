"""Running active-learning loops for benchmarks: configs merged from YAML files with
{reference} placeholders and --set overrides, one loop per repeat in its run directory,
histories collected including unfinished loops, docs written.

A driver (run as ``python benchmarks/<name>.py``, importing ``common`` and ``loops`` as
top-level modules) builds its parser with ``parser``, fixes paths with ``prepare``, makes its
reference data, then calls ``benchmark``: every method x repeat runs as one loop
(``run_loop``: the config of the method, see ``method_config``, seed = repeat, in
<work dir>/<method>/repeat_<r>/, resumable), ``collect`` gathers the histories (finished
ones' history.json, else the generations evaluated so far), and <out dir>/<name>.{md,json}
and <name>_curves.png are written through common.py. Label counts are the package's
"labels_added" (ok labels beyond generation 0's) of each generation's metrics.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import common
import yaml

CONFIGS = "benchmarks/configs"


def merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_key(config: dict, assignment: str) -> None:
    """Apply "a.b.c=value" (value parsed as YAML); in a list (evaluate) a part is an index or
    an evaluator's name (its type when it has none)."""
    key, value = assignment.split("=", 1)
    parts, node = key.split("."), config
    for i, part in enumerate(parts):
        if isinstance(node, list):
            part = next((j for j, e in enumerate(node)
                         if part in (str(j), e.get("name", e.get("type")))), None)
            if part is None:
                raise ValueError(f"--set {key}: {parts[i]!r} is not in the list")
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(value)
        else:
            node = node[part] if isinstance(node, list) else node.setdefault(part, {})


def configure(files: list[str], reference: Path, sets: list[str]) -> dict:
    """The run config: YAML ``files`` merged in order, "{reference}" made the repo-relative
    path of ``reference``, ``sets`` applied; validated. A benchmark file's "methods" mapping
    (method name -> config overrides) is kept under that key and validated per method."""
    from advsample.config import parse_config

    config = {}
    for f in files:
        config = merge(config, yaml.safe_load((common.REPO / f).read_text()))
    text = json.dumps(config).replace("{reference}", os.path.relpath(reference, common.REPO))
    config = json.loads(text)
    for s in sets:
        set_key(config, s)
    for name in config.get("methods", {}) or [None]:
        parse_config(method_config(config, name), " + ".join(files) + f" ({name or 'base'})")
    return config


def method_config(config: dict, method: str | None = None) -> dict:
    """The run config of one method: the benchmark config without its "methods" mapping,
    merged with that method's overrides (a name not in the mapping is a sampler type);
    None: the shared part only (oracle, system, ... for reference data)."""
    base = {k: v for k, v in config.items() if k != "methods"}
    if method is None:
        return base
    return merge(base, config.get("methods", {}).get(method, {"sampler": {"type": method}}))


SAMPLING_KEYS = ("sampler", "select", "loop")
"""Config keys generation 0 does not depend on (it ends before the first sampling)."""

GENERATION_0 = "generation_0"
"""<work dir>/generation_0/repeat_<r>: the generation 0 shared by a repeat's methods."""

CHECKPOINT_0 = Path("generations/gen_000/committee.pt")
"""In a run directory: the generation-0 committee, the mark of a started run."""


def before_sampling(config: dict) -> dict:
    """The part of a method's config that its generation 0 depends on."""
    return {k: v for k, v in config.items() if k not in SAMPLING_KEYS}


def _loop(config: dict, seed: int, run_dir: Path, unstarted: bool | None = None):
    """The loop of ``config`` with ``seed`` in ``run_dir`` (resumed when there; a run that
    had not trained generation 0, ``unstarted``, takes ``config``, as the CLI does), logging
    with the run's name, on one thread."""
    import logging

    import torch

    from advsample.run import resume
    from advsample.runtime import tune_allocator

    torch.set_num_threads(1)
    tune_allocator()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {run_dir.parent.name}/"
                        f"{run_dir.name}: %(message)s", datefmt="%H:%M:%S", force=True)
    if unstarted is None:
        unstarted = not _trained_generation_0(run_dir)
    if unstarted or not (run_dir / "config.yaml").exists():
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "seed": seed},
                                                            sort_keys=False))
    return resume(run_dir, progress=False)


def _trained_generation_0(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has its generation-0 committee."""
    return (run_dir / CHECKPOINT_0).exists()


def run_generation_0(config: dict, seed: int, run_dir: Path) -> list[dict]:
    """Generation 0 of one repeat (initial data, committee, evaluation: ``ActiveLearning.start``)
    in ``run_dir``; its history (one row)."""
    al = _loop(config, seed, run_dir)
    al.start()
    return al.history()


def copy_generation_0(source: Path, run_dir: Path) -> None:
    """Give the unstarted run ``run_dir`` the finished generation 0 of ``source``: its labels
    (SQLite backup: a consistent copy), initial data, evaluator caches and gen_000, the
    committee checkpoint last (renamed into place), so a copy killed half-way leaves no
    trained generation 0 and is redone on the next start. The run then resumes at its first
    sampling."""
    import shutil
    import sqlite3

    partial_db = run_dir / "labels.db.partial"
    partial_db.unlink(missing_ok=True)
    src, dst = sqlite3.connect(source / "labels.db"), sqlite3.connect(partial_db)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    partial_db.replace(run_dir / "labels.db")
    for name in ("initial", "evaluators", "generations/gen_000"):
        if (source / name).exists():
            shutil.copytree(source / name, run_dir / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(CHECKPOINT_0.name))
    shutil.copyfile(source / CHECKPOINT_0, run_dir / f"{CHECKPOINT_0}.partial")
    (run_dir / f"{CHECKPOINT_0}.partial").replace(run_dir / CHECKPOINT_0)


def run_loop(config: dict, seed: int, run_dir: Path, shared: Path | None = None) -> list[dict]:
    """One repeat: the loop of ``config`` with ``seed`` in ``run_dir`` (resumed when there),
    started from the shared generation 0 in ``shared`` when given and finished (also over
    the initial data of an earlier start that never trained generation 0: the shared one
    holds the same); its history (each row with the package's "labels_added")."""
    unstarted = not _trained_generation_0(run_dir)
    if shared is not None and (shared / "history.json").exists() and unstarted:
        copy_generation_0(shared, run_dir)
    al = _loop(config, seed, run_dir, unstarted)
    al.run()
    return al.history()


@dataclass
class Collected:
    """The loops of a benchmark's work directory, as ``collect`` finds them.

    results: method -> histories (lists of generation rows), finished loops and unfinished
    ones (the generations evaluated so far); runs: method -> the run directory of each of
    those histories, in the same order; unfinished: names "<method>/repeat_<r> (<n>
    generations evaluated)"; finished: method -> the finished loops' histories only (the
    same objects)."""

    results: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    unfinished: list = field(default_factory=list)
    finished: dict = field(default_factory=dict)


def collect(methods: list[str], repeats: int, work_dir: Path) -> Collected:
    """Per method the histories of its loops: history.json, else the generations evaluated
    so far (an unfinished loop)."""
    found = Collected()
    for m in methods:
        for k in range(repeats):
            run = work_dir / m / f"repeat_{k}"
            if (run / "history.json").exists():
                history = json.loads((run / "history.json").read_text())
                found.finished.setdefault(m, []).append(history)
            elif history := _evaluated_generations(run):
                plural = "s" * (len(history) != 1)
                found.unfinished.append(
                    f"{m}/repeat_{k} ({len(history)} generation{plural} evaluated)")
            else:
                continue
            found.results.setdefault(m, []).append(history)
            found.runs.setdefault(m, []).append(run)
    return found


def _evaluated_generations(run: Path) -> list[dict]:
    """The history rows of an unfinished loop, as ``ActiveLearning.history`` makes them:
    each evaluated generation's metrics with its sampling statistics under "sampling"."""
    rows = []
    for metrics in sorted(run.glob("generations/gen_*/metrics.json")):
        sampling = metrics.with_name("sampling.json")
        rows.append({**json.loads(metrics.read_text()), **(
            {"sampling": json.loads(sampling.read_text())} if sampling.exists() else {})})
    return rows


def with_compute(results: dict) -> dict:
    """Each history row gains "nn_seconds": the loop's NN wall time up to that generation's
    committee (training of generations <= g and sampling of generations < g, s), and, where
    the loop recorded them, "sampling_evaluations": the structures its committees evaluated
    while sampling generations < g (machine-independent NN cost of sampling)."""
    for histories in results.values():
        for history in histories:
            total, evaluations = 0.0, 0
            for row in history:
                total += float(row.get("train_seconds") or 0.0)
                row["nn_seconds"] = total
                sampling = row.get("sampling") or {}
                if "nn_evaluations" in sampling or evaluations:
                    row["sampling_evaluations"] = evaluations
                total += float(sampling.get("seconds") or 0.0)
                evaluations += int(sampling.get("nn_evaluations") or 0)
    return results


def compute_table(results: dict) -> str:
    """Markdown table per method: labels added, NN seconds (training + sampling), structures
    evaluated by the committee while sampling (when recorded) and oracle seconds of a whole
    loop, median over repeats with 90 % bootstrap intervals."""
    counted = any("nn_evaluations" in (r.get("sampling") or {})
                  for hs in results.values() for h in hs for r in h)
    lines = ["| method | labels added | NN seconds (train + sample) | "
             + ("sampling: structures evaluated | " if counted else "") + "oracle seconds |",
             "|---|---|---|" + ("---|" if counted else "") + "---|"]
    for m, histories in results.items():
        final = [h[-1] for h in histories]
        oracle = [sum(float(r.get("oracle_seconds") or 0.0) for r in h) for h in histories]
        columns = [[r["labels_added"] for r in final], [r["nn_seconds"] for r in final]]
        if counted:
            columns.append([sum(int((r.get("sampling") or {}).get("nn_evaluations") or 0)
                                for r in h) for h in histories])
        cells = [common.format_ci(*common.median_ci(values), ".4g")
                 for values in (*columns, oracle)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def label_energies(methods: list[str], repeats: int, work_dir: Path,
                   temperature_K: float) -> dict:
    """Where each loop's added labels lie in energy: per method a list over repeats (None
    where the loop has no labels.db) of {"labels", "median_eV", "p90_eV", "thermal"}: the
    oracle energies of the ok labels beyond generation 0 above the lowest initial energy of
    the same composition (eV; median and 90th percentile), and the fraction at most
    ``thermal_ceiling`` (n_atoms, ``temperature_K``, the initial data's temperature) above
    it: the labels a thermal sampler at the initial temperature could have produced."""
    import numpy as np

    from advsample.evaluators.conformers import thermal_ceiling
    from advsample.store import Store

    out = {}
    for m in methods:
        for k in range(repeats):
            db = work_dir / m / f"repeat_{k}" / "labels.db"
            if not db.exists():
                out.setdefault(m, []).append(None)
                continue
            atoms = Store(db).training_atoms()
            lowest = {}
            for a in atoms:
                if a.info["generation"] == 0:
                    f = a.get_chemical_formula()
                    lowest[f] = min(lowest.get(f, np.inf), a.get_potential_energy())
            above, ceiling = [], []
            for a in atoms:
                f = a.get_chemical_formula()
                if a.info["generation"] > 0 and f in lowest:
                    above.append(a.get_potential_energy() - lowest[f])
                    ceiling.append(thermal_ceiling(len(a), temperature_K))
            above, ceiling = np.array(above), np.array(ceiling)
            out.setdefault(m, []).append({
                "labels": len(above),
                "median_eV": float(np.median(above)) if len(above) else None,
                "p90_eV": float(np.percentile(above, 90)) if len(above) else None,
                "thermal": float(np.mean(above <= ceiling)) if len(above) else None})
    return out


def label_energy_table(energies: dict, temperature_K: float) -> str:
    """Markdown table of :func:`label_energies`: per method the repeats' values."""
    def cell(values, fmt):
        return ", ".join("-" if v is None else format(v, fmt) for v in values)

    lines = ["| method | labels added | median above the initial minimum (eV) | 90th "
             f"percentile (eV) | within a thermal energy at {temperature_K:g} K |",
             "|---|---|---|---|---|"]
    for m, per_repeat in energies.items():
        rows = [r or {"labels": None, "median_eV": None, "p90_eV": None, "thermal": None}
                for r in per_repeat]
        lines.append(f"| {m} | {cell([r['labels'] for r in rows], 'd')} | "
                     f"{cell([r['median_eV'] for r in rows], '.2f')} | "
                     f"{cell([r['p90_eV'] for r in rows], '.2f')} | "
                     f"{cell([r['thermal'] for r in rows], '.0%')} |")
    return "\n".join(lines) + "\n"


def raise_limits(configs: dict[str, dict], repeats: int, work_dir: Path) -> None:
    """Loops that started with lower limits than their method has now (loop.generations,
    loop.label_budget) get the new ones (``advsample.run.extend``: only those two keys of
    the stored config change) and lose their cached history.json, so they run on from their
    last generation. A loop another process runs now is left alone (said on stdout)."""
    from advsample.config import load_config
    from advsample.run import extend
    from advsample.runlock import RunLock, RunLocked

    for m, config in configs.items():
        wanted = config.get("loop") or {}
        for k in range(repeats):
            run_dir = work_dir / m / f"repeat_{k}"
            if not ((run_dir / "config.yaml").exists() and _trained_generation_0(run_dir)):
                continue
            stored = load_config(run_dir / "config.yaml").loop
            raised = {key: wanted.get(key) for key in ("generations", "label_budget")
                      if None not in (wanted.get(key), getattr(stored, key))  # None: no limit
                      and wanted[key] > getattr(stored, key)}
            if not raised:
                continue
            try:
                with RunLock(run_dir):
                    changes = extend(run_dir, **raised)
                    (run_dir / "history.json").unlink(missing_ok=True)
            except RunLocked as exc:
                print(f"{common.relative(run_dir)}: limits not raised ({exc})", flush=True)
                continue
            print(f"{common.relative(run_dir)}: " + ", ".join(
                f"loop.{key} {old} -> {new}" for key, (old, new) in changes.items())
                + "; it runs on", flush=True)


def run_methods(config: dict, args) -> None:
    """Every method x repeat of ``config``. The methods whose generation 0 depends on nothing
    they do not share (the same config but for SAMPLING_KEYS) start from one generation 0
    per repeat, made first in <work dir>/generation_0/: it is the same committee in every
    one of them, and its evaluation (long NN-MD tests) is paid once; a method run alone
    starts from it too when an earlier run made it with the same config. Finished loops
    whose method now has higher limits run on (:func:`raise_limits`)."""
    configs = {m: method_config(config, m) for m in args.methods}
    first = before_sampling(configs[args.methods[0]])
    sharing = [m for m in args.methods if before_sampling(configs[m]) == first]
    shared = len(sharing) > 1 or _made_generation_0(args.work_dir, first)
    if shared:
        common.run_repeats({GENERATION_0: partial(run_generation_0, configs[sharing[0]])},
                           args.repeats, args.work_dir, args.workers)
    raise_limits(configs, args.repeats, args.work_dir)
    fns = {m: partial(run_loop, configs[m]) for m in args.methods}
    for m in sharing if shared else []:
        fns[m] = partial(_shared_loop, configs[m], args.work_dir / GENERATION_0)
    common.run_repeats(fns, args.repeats, args.work_dir, args.workers)


def _made_generation_0(work_dir: Path, first: dict) -> bool:
    """Whether <work dir>/generation_0/ already holds generation 0 of the config part
    ``first`` (:func:`before_sampling`): an earlier run of methods that share it, which a
    method run alone later (a new baseline on the same repeats) starts from too."""
    stored = work_dir / GENERATION_0 / "repeat_0" / "config.yaml"
    if not stored.exists():
        return False
    made = before_sampling(yaml.safe_load(stored.read_text()))
    return {k: v for k, v in made.items() if k != "seed"} == \
        {k: v for k, v in first.items() if k != "seed"}


def _shared_loop(config: dict, shared_root: Path, seed: int, run_dir: Path) -> list[dict]:
    """:func:`run_loop` from the shared generation 0 of this repeat (same repeat directory
    name under ``shared_root``)."""
    return run_loop(config, seed, run_dir, shared_root / run_dir.name)


def benchmark(name: str, args, files: list[str], intro, keys: dict, target: dict,
              log: frozenset = frozenset(), targets: dict | None = None,
              after=None, rejudge=None) -> None:
    """Run (unless --aggregate-only) every method x repeat of the config ``files`` in
    ``args.work_dir``, then write <out dir>/<name>.{md,json} and <name>_curves.png; ``intro``:
    config -> the document's first lines (config: the first loop's as stored, if any);
    ``keys``: metric -> title (a table and a panel each), ``target``: metric -> (op, value),
    ``log``: the metrics plotted on a log scale; ``targets``: more named criteria, each with
    its own labels-to-target table (``target`` is the one drawn on the curves); ``after``:
    (results, config, out_dir) -> extra document lines (e.g. figures of the driver's own);
    ``rejudge``: (results, runs, config) -> None, recomputes metrics of the collected
    rows in place from the loops' stored data in ``runs`` (method -> run directory of each
    history, see ``Collected``; for a judge fixed after the loops ran)."""
    config = configure(files, args.work_dir / "reference", args.set)
    if not args.aggregate_only:
        run_methods(config, args)
    found = collect(args.methods, args.repeats, args.work_dir)
    # labels and seconds to a target, and a loop's compute, exist only for finished loops;
    # with_compute adds "nn_seconds" to the rows in place, so the finished ones (the same
    # rows) have it too
    results = with_compute(found.results)
    partial_runs, finished = found.unfinished, found.finished
    stored = args.work_dir / args.methods[0] / "repeat_0" / "config.yaml"
    config = yaml.safe_load(stored.read_text()) if stored.exists() else config
    if rejudge is not None:
        rejudge(results, found.runs, config)
    named = {**({} if target in (targets or {}).values() else {"": target}),  # no table twice
             **(targets or {})}
    command = " ".join(["python", f"benchmarks/{name}.py", *(
        os.path.relpath(a, common.REPO) if a.startswith("/") else a for a in sys.argv[1:])])
    settings = {"command": command, "config_files": files, "set": args.set,
                "methods": args.methods, "repeats": args.repeats, "unfinished": partial_runs,
                "config": config}
    summary = {"target": {k: list(v) for k, v in target.items()},
               "labels_to_target": common.target_summary(finished, target, "labels_added"),
               "nn_seconds_to_target": common.target_summary(finished, target, "nn_seconds"),
               "meeting_by_generation": common.meeting_by_generation(results, target,
                                                                    "labels_added"),
               "targets": {n: {"criteria": {k: list(v) for k, v in c.items()},
                               "labels": common.target_summary(finished, c, "labels_added"),
                               "nn_seconds": common.target_summary(finished, c, "nn_seconds")}
                           for n, c in (targets or {}).items()}}
    temperature = float((config.get("initial") or {}).get("temperature_K") or 300.0)
    energies = label_energies(args.methods, args.repeats, args.work_dir, temperature)
    summary["label_energies"] = {"initial_temperature_K": temperature, "methods": energies}
    common.write_json(args.doc_name, settings, results, summary, args.out_dir)
    plot = common.plot_curves(results, keys, args.out_dir / f"{args.doc_name}_curves.png",
                              "labels_added", log=log, targets={k: t for k, (_, t) in
                                                                target.items()},
                              xlabel="labels added")
    lines = [*intro(config), "", f"Command: `{command}`", "",
             f"Config: {' + '.join(f'`{f}`' for f in files)}"
             + (f", with {', '.join(f'`{s}`' for s in args.set)}" if args.set else "")
             + f"; seed = repeat; loops in `{common.relative(args.work_dir)}/<method>/"
             "repeat_<r>` (the JSON holds the first one's config). Medians over repeats "
             "with 90 % bootstrap intervals; generation 0 is the committee trained on the "
             "initial data only."
             + (f" Unfinished loops: {', '.join(partial_runs)}; they appear in the tables "
                "by generation and the curves, not in labels to target nor compute per loop."
                if partial_runs else ""), "",
             "Quality is reported against labels added and against NN compute (wall "
             "seconds of training and sampling, counted per loop; loops ran two at a time on "
             "2 cores, so seconds include that sharing).", ""]
    for title, criteria in named.items():
        what = f"{title}: " if title else ""
        lines += [f"## {what}labels added to reach {common.criteria_text(criteria)}", "",
                  common.table_labels_to_target(finished, criteria, "labels_added"),
                  "NN seconds to reach it (same runs):", "",
                  common.table_labels_to_target(finished, criteria, "nn_seconds"),
                  "Repeats meeting it at each generation, of those evaluated there (median "
                  "labels added): whether a loop that got there stays there.", "",
                  common.table_meeting_by_generation(results, criteria, "labels_added")]
    lines += ["## Compute per loop", "", compute_table(finished)]
    lines += ["## Label energies per repeat", "",
              "Oracle energies of each loop's added labels above the lowest initial energy of "
              "the same composition, per repeat (repeat 0, 1, ...); the last column is the "
              "fraction within the harmonic thermal ceiling of the initial temperature (mean "
              "+ 4 standard deviations of the potential energy of 3N - 6 modes), i.e. labels "
              "a thermal sampler could have produced.", "",
              label_energy_table(energies, temperature)]
    for key, title in keys.items():
        lines += [f"## {title}", "", common.table_by_generation(
            results, {"labels_added": "labels added", key: title}, {key: ".4g"},
            "labels_added")]
    lines += [f"![curves]({plot.name})", ""]
    if after is not None:
        lines += after(results, config, args.out_dir)
    print(common.write_markdown(args.doc_name, "\n".join(lines), args.out_dir).read_text())


def parser(doc: str, name: str, methods: list[str], **defaults):
    """common.bench_args (2 workers by default) plus --methods and --set."""
    p = common.bench_args(doc.splitlines()[0], name, workers=2, **defaults)
    p.add_argument("--methods", nargs="+", default=methods, help="samplers (%(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. evaluate.stability.steps=50")
    p.add_argument("--doc-name", default=name, help="stem of the .md/.json/_curves.png "
                   "written (%(default)s; e.g. another name for an ablation of the same runs)")
    return p


def prepare(args):
    """Absolute work/out dirs, the reference dir made, cwd the repo root (configs' paths)."""
    args.work_dir, args.out_dir = args.work_dir.resolve(), args.out_dir.resolve()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(common.REPO)
    (args.work_dir / "reference").mkdir(parents=True, exist_ok=True)
    return args
