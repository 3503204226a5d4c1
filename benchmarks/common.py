"""Shared machinery of the benchmark drivers: resumable repeats, statistics, tables, plots, docs.

A benchmark compares METHODS, each run for several REPEATS (seeds). One run's history is a
list of rows, one per generation: (possibly nested) dicts with "generation", a label count
(key chosen by the driver, default "labels") and metric values. Nested values are addressed
by dotted keys ("path.barrier_error" is row["path"]["barrier_error"]); None/NaN means "not
evaluated at this generation". Only numpy, matplotlib and the standard library are used.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import operator
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from advsample.executors import exit_with_parent

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks"
OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
History = list[dict]
Results = dict[str, list[History]]


def relative(path: str | os.PathLike) -> str:
    """``path`` relative to the repository if it lies inside it or beside it (../shared/...),
    else only its name. Tried as written (made absolute; ../shared may be a symlink) and
    with symlinks resolved."""
    for p in (Path(os.path.abspath(path)), Path(path).resolve()):
        if p.is_relative_to(REPO):
            return p.relative_to(REPO).as_posix() or "."
        if p.is_relative_to(REPO.parent):
            return "../" + p.relative_to(REPO.parent).as_posix()
    return Path(path).name


_ROOT = re.compile(re.escape(str(REPO)) + r"(/|(?![\w.-]))")


def relativise(obj: Any, strict: bool = False) -> Any:
    """Copy of a JSON-able structure (dicts, lists/tuples, numpy values and paths are walked or
    converted) with every mention of the repo root made repo-relative; ``strict`` also maps
    NaN/inf to None, for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): relativise(v, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [relativise(v, strict) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    if isinstance(obj, str):
        return _ROOT.sub(lambda m: "" if m.group(1) == "/" else ".", obj)
    return None if strict and isinstance(obj, float) and not math.isfinite(obj) else obj


def _default(obj: Any) -> Any:
    """json.dumps fallback for numpy values and paths."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return os.fspath(obj)


def _write_atomic(path: Path, text: str) -> Path:
    """Write via a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _call(fn: Callable[[int, Path], History], seed: int, run_dir: Path):
    """Run one job (possibly in a worker) holding ``run_dir``'s lock: (history, error text,
    seconds). A second driver on the same work dir cannot write the same run directory: its
    job fails naming the live holder (``advsample.runlock``), and a job another driver
    finished since the job list was made returns that history without running again."""
    from advsample.runlock import RunLock

    t0 = time.time()
    try:
        with RunLock(run_dir):
            if (done := run_dir / "history.json").exists():
                return json.loads(done.read_text()), None, time.time() - t0
            return fn(seed, run_dir), None, time.time() - t0
    except Exception:
        return None, traceback.format_exc(), time.time() - t0


def load_histories(methods: Iterable[str], repeats: int, work_dir: Path) -> Results:
    """Cached histories ``work_dir/<method>/repeat_<k>/history.json``; missing ones omitted
    (and methods without any finished repeat)."""
    out: Results = {}
    for m in methods:
        files = (Path(work_dir) / m / f"repeat_{k}" / "history.json" for k in range(repeats))
        if runs := [json.loads(f.read_text()) for f in files if f.exists()]:
            out[m] = runs
    return out


def run_repeats(methods: dict[str, Callable[[int, Path], History]], repeats: int,
                work_dir: Path, workers: int = 1, first_seed: int = 0) -> Results:
    """Run ``fn(seed, run_dir)`` per method x repeat (seed = first_seed + k), resumably.

    Finished histories are cached in ``work_dir/<method>/repeat_<k>/history.json`` and not
    re-run. With ``workers > 1`` jobs run in a spawn process pool (``fn`` must be picklable:
    a top-level function or a functools.partial of one). A failing job writes ``error.txt``
    beside it and the others go on (a hard worker crash breaks the pool, though; re-run).
    Drivers run as scripts must guard their entry point with ``if __name__ == "__main__"``.
    Returns the finished histories, cached ones included (see load_histories).
    """
    work_dir = Path(work_dir).resolve()
    jobs = []
    for k in range(repeats):  # repeat-major: a partial run has every method's first repeats
        for m, fn in methods.items():
            run_dir = work_dir / m / f"repeat_{k}"
            if not (run_dir / "history.json").exists():
                run_dir.mkdir(parents=True, exist_ok=True)
                jobs.append((m, k, first_seed + k, fn, run_dir))
    cached = len(methods) * repeats - len(jobs)
    if cached:
        print(f"{cached} finished repeat(s) cached in {relative(work_dir)}", flush=True)

    def finish(i: int, job: tuple, history: History | None, error: str | None, sec: float):
        m, k, seed, _, run_dir = job
        try:
            if error is None:
                text = json.dumps(history, indent=1, default=_default)
                _write_atomic(run_dir / "history.json", text)
                (run_dir / "error.txt").unlink(missing_ok=True)
        except Exception:  # a history that is not JSON-able
            error = traceback.format_exc()
        if error is not None:
            (run_dir / "error.txt").write_text(error)
        status = "done" if error is None else f"FAILED (see {relative(run_dir / 'error.txt')})"
        print(f"[{i}/{len(jobs)}] {m} repeat {k} (seed {seed}): {status} in {sec:.1f} s",
              flush=True)

    if workers <= 1:
        for i, job in enumerate(jobs, 1):
            finish(i, job, *_call(job[3], job[2], job[4]))
    elif jobs:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the spawned workers
        ctx = multiprocessing.get_context("spawn")
        # workers end with the driver: a killed driver's loops must not run on holding
        # their run locks (a rerun would find them "being run")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx,
                                 initializer=exit_with_parent) as pool:
            futures = {pool.submit(_call, j[3], j[2], j[4]): (j, time.time()) for j in jobs}
            for i, fut in enumerate(as_completed(futures), 1):
                job, t0 = futures[fut]
                try:
                    result = fut.result()
                except Exception:  # pickling errors, crashed workers
                    result = None, traceback.format_exc(), time.time() - t0
                finish(i, job, *result)
    return load_histories(methods, repeats, work_dir)


def metric(row: dict, key: str) -> float:
    """``row[a][b]`` for key "a.b" as a float; nan if missing, None or not a number."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return math.nan
        value = value[part]
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def labels_to_target(history: History, criteria: dict[str, tuple[str, float]],
                     labels_key: str = "labels") -> int | None:
    """Label count of the first generation meeting every criterion (NaN fails), else None.

    ``criteria`` maps keys to (op, threshold) with op in "<=", "<", ">=", ">".
    """
    for row in history:
        if all(OPS[op](metric(row, key), thr) for key, (op, thr) in criteria.items()):
            labels = metric(row, labels_key)
            if not math.isnan(labels):
                return int(labels)
    return None


def _medians(samples: np.ndarray) -> np.ndarray:
    """Medians along the last axis (+inf values stay +inf)."""
    s = np.sort(samples, axis=-1)
    n = s.shape[-1]
    return s[..., n // 2] if n % 2 else 0.5 * (s[..., n // 2 - 1] + s[..., n // 2])


def median_ci(values: Iterable[float | None], level: float = 0.9, n_boot: int = 2000,
              seed: int = 0) -> tuple[float, float, float]:
    """(median, lo, hi): median with a percentile-bootstrap ``level`` interval.

    None means "not reached" and counts as +inf (censored), so the median or the bounds may
    be inf; NaN values are dropped (all NaN gives NaNs). The bounds are actual bootstrap
    medians (no interpolation) and always enclose the median.
    """
    x = np.array([math.inf if v is None else float(v) for v in values], dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    med = float(_medians(x))
    rng = np.random.default_rng(seed)
    boot = _medians(x[rng.integers(0, len(x), size=(n_boot, len(x)))])
    alpha = (1.0 - level) / 2
    lo = float(np.quantile(boot, alpha, method="lower"))
    hi = float(np.quantile(boot, 1.0 - alpha, method="higher"))
    return med, min(lo, med), max(hi, med)


def curves(histories: list[History], key: str, labels_key: str = "labels") -> dict:
    """Repeats aligned by row["generation"]: per generation the per-repeat values (NaN where
    missing), their median and CI (NaN dropped), the count ``n`` and the median label count."""
    by_gen = [{int(metric(r, "generation")): r for r in h} for h in histories]
    gens = sorted({g for h in by_gen for g in h})
    values = [[metric(h[g], key) if g in h else math.nan for h in by_gen] for g in gens]
    labels = [[metric(h[g], labels_key) for h in by_gen if g in h] for g in gens]
    med, lo, hi = (list(c) for c in zip(*map(median_ci, values))) if gens else ([], [], [])
    return {"generation": gens, "values": values, "median": med, "lo": lo, "hi": hi,
            "n": [int(np.sum(~np.isnan(v))) for v in values],
            "labels": [median_ci(v, n_boot=1)[0] for v in labels]}


def target_summary(results: Results, criteria: dict[str, tuple[str, float]],
                   labels_key: str = "labels", level: float = 0.9) -> dict[str, dict]:
    """Per method: labels to target per repeat (None = not reached), median, CI, reached."""
    out = {}
    for m, histories in results.items():
        per = [labels_to_target(h, criteria, labels_key) for h in histories]
        med, lo, hi = median_ci(per, level)
        out[m] = {"per_repeat": per, "median": med, "lo": lo, "hi": hi,
                  "reached": sum(v is not None for v in per), "repeats": len(per)}
    return out


def meeting_by_generation(results: Results, criteria: dict[str, tuple[str, float]],
                          labels_key: str = "labels") -> dict[str, dict]:
    """Per method and generation: how many repeats meet every criterion there ("met"), out
    of those where every criterion's metric was evaluated ("of"), and their median label
    count ("labels"), as {method: {"generation": [...], "met": [...], "of": [...],
    "labels": [...]}}. Unlike labels to target (the first generation meeting it), this shows
    whether a loop that got there stays there."""
    out = {}
    for m, histories in results.items():
        rows = [{int(metric(r, "generation")): r for r in h} for h in histories]
        gens = sorted({g for h in rows for g in h})
        entry = {"generation": gens, "met": [], "of": [], "labels": []}
        for g in gens:
            at = [h[g] for h in rows if g in h]
            judged = [r for r in at if all(not math.isnan(metric(r, k)) for k in criteria)]
            entry["met"].append(sum(all(OPS[op](metric(r, k), t) for k, (op, t) in
                                        criteria.items()) for r in judged))
            entry["of"].append(len(judged))
            entry["labels"].append(median_ci([metric(r, labels_key) for r in at], n_boot=1)[0])
        out[m] = entry
    return out


def table_meeting_by_generation(results: Results, criteria: dict[str, tuple[str, float]],
                                labels_key: str = "labels") -> str:
    """Markdown table of :func:`meeting_by_generation`: a row per generation, per method a
    cell "met/of (median labels)", "–" where no repeat was judged."""
    summary = meeting_by_generation(results, criteria, labels_key)
    gens = sorted({g for e in summary.values() for g in e["generation"]})
    lines = ["| generation | " + " | ".join(summary) + " |", "|---" * (len(summary) + 1) + "|"]
    for g in gens:
        cells = []
        for e in summary.values():
            i = e["generation"].index(g) if g in e["generation"] else None
            cells.append("–" if i is None or not e["of"][i] else
                         f"{e['met'][i]}/{e['of'][i]} ({format_value(e['labels'][i], '.0f')})")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_value(value: float | None, fmt: str = ".3g", inf: str = "not reached") -> str:
    """``value`` formatted with ``fmt``; None/inf as ``inf``, NaN as "–"."""
    if value is None or value == math.inf:
        return inf
    if math.isnan(value):
        return "–"
    return format(value, fmt)


def format_ci(med: float, lo: float, hi: float, fmt: str = ".3g") -> str:
    """ "median [lo, hi]", or just the median when the interval is a single point."""
    m, a, b = (format_value(v, fmt, inf="∞") for v in (med, lo, hi))
    return m if a == m == b else f"{m} [{a}, {b}]"


def table_by_generation(results: Results, keys: list[str] | dict[str, str],
                        fmt: str | dict[str, str] = ".3g", labels_key: str = "labels") -> str:
    """Markdown table: one row per generation, a "median [lo, hi]" column per method x key.

    ``keys`` may map keys to column titles; ``fmt`` is one format spec or one per key. A cell
    over fewer repeats than the method has (missing or not evaluated) ends with "(n=...)".
    """
    titles = dict(keys) if isinstance(keys, dict) else {k: k for k in keys}
    cols = [(k, curves(h, k, labels_key), len(h)) for h in results.values() for k in titles]
    gens = sorted({g for _, c, _ in cols for g in c["generation"]})
    head = [f"{m}: {titles[k]}" for m in results for k in titles]
    lines = ["| generation | " + " | ".join(head) + " |", "|---" * (len(cols) + 1) + "|"]
    for g in gens:
        cells = []
        for k, c, n in cols:
            f = fmt.get(k, ".3g") if isinstance(fmt, dict) else fmt
            i = c["generation"].index(g) if g in c["generation"] else None
            cell = "–" if i is None else format_ci(c["median"][i], c["lo"][i], c["hi"][i], f)
            partial = i is not None and 0 < c["n"][i] < n
            cells.append(cell + (f" (n={c['n'][i]})" if partial else ""))
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_labels_to_target(results: Results, criteria: dict[str, tuple[str, float]],
                           labels_key: str = "labels", level: float = 0.9) -> str:
    """Markdown table: labels needed per method (per repeat, median, CI, repeats reaching)."""
    lines = [f"| method | per repeat | median | {level:.0%} CI | reached |", "|---" * 5 + "|"]
    for m, s in target_summary(results, criteria, labels_key, level).items():
        per = ", ".join(format_value(v, "d") for v in s["per_repeat"])
        ci = "[" + ", ".join(format_value(s[b], ".0f", inf="∞") for b in ("lo", "hi")) + "]"
        lines.append(f"| {m} | {per} | {format_value(s['median'], '.0f')} | {ci} | "
                     f"{s['reached']}/{s['repeats']} |")
    return "\n".join(lines) + "\n"


def criteria_text(criteria: dict[str, tuple[str, float]]) -> str:
    """Human-readable criteria, e.g. "path.abs_barrier_error <= 0.02 and ..."."""
    return " and ".join(f"{k} {op} {thr:g}" for k, (op, thr) in criteria.items())


def plot_curves(results: Results, keys: list[str] | dict[str, str], path: Path,
                labels_key: str = "labels", log: set[str] = frozenset(),
                targets: dict[str, float] | None = None, xlabel: str = "labels") -> Path:
    """One panel per key, one line per method (median vs median labels) with its CI band and
    thin per-repeat lines; ``log`` keys get a log y axis, ``targets`` a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = dict(keys) if isinstance(keys, dict) else {k: k for k in keys}
    fig, axes = plt.subplots(1, len(titles), figsize=(4.5 * len(titles), 3.8), squeeze=False)
    for ax, key in zip(axes[0], titles):
        for i, (m, histories) in enumerate(results.items()):
            color, marker = f"C{i % 10}", "osD^v<>ph*"[i % 10]
            for h in histories:  # generations without the metric (evaluated every k) left out
                points = [(metric(r, labels_key), metric(r, key)) for r in h]
                points = [p for p in points if not math.isnan(p[1])]
                ax.plot([x for x, _ in points], [y for _, y in points], "-", color=color,
                        lw=0.6, alpha=0.35)
            c = curves(histories, key, labels_key)
            keep = [k for k, v in enumerate(c["median"]) if not math.isnan(v)]
            x, med, lo, hi = ([c[name][k] for k in keep]
                              for name in ("labels", "median", "lo", "hi"))
            # hollow markers of growing size and dashes: coinciding medians stay visible
            ax.plot(x, med, marker=marker, ls=("-", "--", ":", "-.")[i % 4],
                    color=color, mfc="none", ms=5 + 2 * i, label=m)
            ax.fill_between(x, lo, hi, color=color, alpha=0.2)
        if targets and key in targets:
            ax.axhline(targets[key], color="k", ls=":")
        if key in log:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(titles[key])
    axes[0][0].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(name: str, settings: dict, results: Results, summary: dict,
               out_dir: Path = DOCS) -> Path:
    """``out_dir/<name>.json`` with settings, summary and per-repeat histories ("runs": method
    -> list of histories), relativised (no absolute repo path), strict JSON (NaN/inf: null)."""
    data = {"settings": settings, "summary": summary, "runs": results}
    text = json.dumps(relativise(data, strict=True), indent=1, allow_nan=False)
    return _write_atomic(Path(out_dir) / f"{name}.json", text)


READING = "## Reading"


def write_markdown(name: str, text: str, out_dir: Path = DOCS) -> Path:
    """``out_dir/<name>.md`` with every mention of the repo root made relative; a hand-written
    section of the file it replaces, from a line "## Reading" to the end, is kept."""
    path = Path(out_dir) / f"{name}.md"
    if path.exists() and READING in (previous := path.read_text()) and READING not in text:
        text = text.rstrip("\n") + "\n\n" + READING + previous.split(READING, 1)[1]
    return _write_atomic(path, relativise(text))


def bench_args(description: str, name: str | None = None, **defaults: Any
               ) -> argparse.ArgumentParser:
    """Parser with the flags every driver has: --repeats, --workers, --work-dir (default
    runs/benchmarks/<name>), --aggregate-only, --out-dir. ``defaults`` override these
    defaults (repeats=3, workers=1) or preset any other destination."""
    name = name or Path(sys.argv[0]).stem
    d = {"repeats": 3, "workers": 1, "work_dir": REPO / "runs" / "benchmarks" / name,
         "out_dir": DOCS, **defaults}
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeats", type=int, help="repeats (seeds) per method (%(default)s)")
    p.add_argument("--workers", type=int, help="parallel worker processes (%(default)s)")
    p.add_argument("--work-dir", type=Path, help="run directories and cached histories")
    p.add_argument("--aggregate-only", action="store_true",
                   help="run nothing; only aggregate the cached histories")
    p.add_argument("--out-dir", type=Path, help="where the .md/.json/.png go (docs)")
    p.set_defaults(**d)
    return p
