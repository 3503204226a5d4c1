"""Plots and a markdown summary of a run directory (layout: ``advsample.run``).

The report reads only the run's files: labels.db, each generation's metrics.json and
sampling.json, stopped.json. Each evaluator's numbers carry their "type", which picks its plot
from ``advsample.evaluators.PLOTS``; nothing here knows a particular system.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from advsample.store import STORE_NAME, Store

SCALARS = {  # evaluator type -> (key, column title, format) in the summary table
    "test_set": [("forces_rmse", "test F RMSE (eV/Å)", ".4f"),
                 ("energy_rmse", "test E RMSE (eV/atom)", ".5f"),
                 ("sigma_error_spearman", "ρ(σ, error)", ".2f")],
    "stability": [("fraction_stable", "stable", ".2f")],
    "path": [("barrier", "barrier (eV)", ".4f"), ("barrier_error", "barrier error (eV)", "+.4f")],
    "coverage": [("occupied", "CV cells", "d")],
    "grid": [("rmse_grid", "grid RMSE", ".4g")],
    "conformers": [("fraction_basins_visited", "basins reached", ".2f"),
                   ("energy_rmse", "scan E RMSE (eV)", ".4f")],
    "calibration": [("spearman", "ρ(σ, error) fresh labels", ".2f"),
                    ("transfer_coverage", "last 90% bound covers", ".2f")],
}


def _json_files(run_dir: Path, name: str) -> list[dict]:
    files = sorted((run_dir / "generations").glob(f"gen_*/{name}.json"))
    return [json.loads(f.read_text()) for f in files]


def generation_metrics(run_dir: Path) -> list[dict]:
    """metrics.json of every evaluated generation, in order."""
    return _json_files(Path(run_dir), "metrics")


def sampling_statistics(run_dir: Path) -> list[dict]:
    """sampling.json of every sampled generation, in order."""
    return _json_files(Path(run_dir), "sampling")


def evaluator_entries(metrics: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    """Evaluator name -> [(generation, its numbers)] over the generations that have them."""
    out: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for m in metrics:
        for key, value in m.items():
            if isinstance(value, dict) and "type" in value:
                out[key].append((m["generation"], value))
    return dict(out)


def status(run_dir: str | Path) -> str:
    """A few lines on where a run stands."""
    run_dir = Path(run_dir)
    if not (run_dir / STORE_NAME).exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no labels.db)")
    rows = Store(run_dir / STORE_NAME).rows()
    per_gen = defaultdict(lambda: defaultdict(int))
    for r in rows:
        per_gen[r["generation"]][r["status"]] += 1
    lines = [f"run {run_dir}: {len(rows)} structures"]
    for g in sorted(per_gen):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(per_gen[g].items()))
        lines.append(f"  generation {g}: {counts}")
    for m in generation_metrics(run_dir):
        extra = "".join(f", {title} {_fmt(v.get(key), f)}" for name, v in m.items()
                        if isinstance(v, dict) and v.get("type") in SCALARS
                        for key, title, f in SCALARS[v["type"]][:1])
        lines.append(f"  committee {m['generation']}: val force RMSE "
                     f"{m['val_forces_rmse']:.4f} eV/Å{extra}")
    stopped = run_dir / "stopped.json"
    if stopped.exists():
        lines.append("  stopped: " + json.loads(stopped.read_text())["reason"])
    else:
        lines.append("  not finished: `advsample run` on this directory continues it")
    return "\n".join(lines)


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, fmt)


def write_report(run_dir: str | Path) -> Path:
    """report/report.md and PNG plots in ``run_dir``; the markdown's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    rows = Store(run_dir / STORE_NAME).rows()
    metrics = generation_metrics(run_dir)
    sampling = sampling_statistics(run_dir)
    entries = evaluator_entries(metrics)

    _generations_plot(rows, metrics, out / "generations.png", plt)
    _convergence_plot(sampling, run_dir, out / "convergence.png", plt)
    columns = [(name, key, title, f) for name, es in entries.items()
               for key, title, f in SCALARS.get(es[0][1]["type"], [])]
    lines = [f"# advsample run report: {run_dir.name}", "",
             "| generation | labels | val F RMSE (eV/Å) | val E RMSE (eV/atom) | "
             + " | ".join(f"{name}: {title}" for name, _, title, _ in columns) + " |",
             "|---" * (4 + len(columns)) + "|"]
    for m in metrics:
        cells = [_fmt(m.get(name, {}).get(key), f) for name, key, _, f in columns]
        lines.append(f"| {m['generation']} | {m['labels']} | {m['val_forces_rmse']:.4f} | "
                     f"{m['val_energy_rmse']:.5f} | " + " | ".join(cells) + " |")
    lines += ["", *_label_outcomes(rows), "", "![generations](generations.png)", "",
              "Convergence: the candidates' σ²_F statistic per generation (the run stops "
              "when it no longer falls).", "", "![convergence](convergence.png)", ""]
    for name, es in entries.items():
        path = _evaluator_plot(name, es, out, plt)
        lines += [f"## {name} ({es[0][1]['type']})", "", f"![{name}]({path.name})", "",
                  *_failure_lines(name, es, run_dir)]
    stopped = run_dir / "stopped.json"
    if stopped.exists():
        lines.append("Stopped: " + json.loads(stopped.read_text())["reason"] + ".")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _failure_lines(name: str, entries: list[tuple[int, dict]], run_dir: Path) -> list[str]:
    """Per generation with failed NN-MD runs: how many failed on what, and the file with
    their geometries at failure (stability evaluators; nothing for other types)."""
    lines = []
    for g, m in entries:
        culprits = m.get("failures_by_culprit") or {}
        if not culprits:
            continue
        frames = Path("generations") / f"gen_{g:03d}" / f"{name}_failures.extxyz"
        where = f" (geometries: `{frames.as_posix()}`)" if (run_dir / frames).exists() else ""
        counts = ", ".join(f"{key} x {n}" for key, n in culprits.items())
        lines.append(f"- generation {g}: {counts}{where}")
    return ["Failed runs:", "", *lines, ""] if lines else []


def _label_outcomes(rows: list[dict]) -> list[str]:
    """One line counting the rows per status, and the most frequent reasons of the failed and
    rejected ones."""
    by_status = Counter(r["status"] for r in rows)
    lines = ["Structures: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) + "."]
    reasons = Counter((r["status"], r["message"]) for r in rows
                      if r["status"] in ("failed", "rejected"))
    lines += [f"- {n} x {status}: {message}" for (status, message), n in reasons.most_common(5)]
    return lines


def _evaluator_plot(name: str, entries: list[tuple[int, dict]], out: Path, plt) -> Path:
    from advsample.evaluators import PANELS, PLOTS

    kind = entries[0][1]["type"]
    n = PANELS[kind]
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    PLOTS[kind](entries, *axes[0])
    fig.suptitle(name)
    fig.tight_layout()
    path = out / f"evaluator_{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _convergence_plot(sampling: list[dict], run_dir: Path, path: Path, plt) -> None:
    """The convergence statistic and the largest candidate σ²_F per generation."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if sampling:
        gens = [s["generation"] for s in sampling]
        ax.semilogy(gens, [s["uncertainty_statistic"] for s in sampling], "o-",
                    label="convergence statistic")
        ax.semilogy(gens, [s["uncertainty_max"] for s in sampling], "s--", label="largest")
        ax.semilogy(gens, [s["threshold"] if s["threshold"] > 0 else np.nan for s in sampling],
                    ":", label="gate")
        ax.legend(fontsize=8)
    stopped = run_dir / "stopped.json"
    if stopped.exists():
        ax.set_title(json.loads(stopped.read_text())["reason"], fontsize=8, wrap=True)
    ax.set_xlabel("generation")
    ax.set_ylabel("candidate σ²_F ((eV/Å)²)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _generations_plot(rows: list[dict], metrics: list[dict], path: Path, plt) -> None:
    """σ²_F of the selected structures, training errors, labelled energies, labels."""
    gens = sorted({r["generation"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    for g in gens[1:]:
        u = [r["uncertainty"] for r in rows if r["generation"] == g and r.get("uncertainty")]
        ax.scatter([g] * len(u), u, s=12, alpha=0.7)
    ax.set_yscale("log")
    ax.set_title("σ²_F of selected structures at selection (eV/Å)²")
    ax.set_xlabel("generation")
    ax = axes[0, 1]
    if metrics:
        g_m = [m["generation"] for m in metrics]
        ax.plot(g_m, [m["train_forces_rmse"] for m in metrics], "o-", label="train forces")
        ax.plot(g_m, [m["val_forces_rmse"] for m in metrics], "s-", label="validation forces")
        ax.set_yscale("log")
        ax.legend()
    ax.set_title("committee-mean force RMSE (eV/Å)")
    ax.set_xlabel("generation")
    ax = axes[1, 0]
    ok = [r for r in rows if r["status"] == "ok" and r["energy"] is not None]
    if ok:
        e0 = min(r["energy"] / r["natoms"] for r in ok)
        for g in gens:
            e = [r["energy"] / r["natoms"] - e0 for r in ok if r["generation"] == g]
            jitter = np.random.default_rng(g).uniform(-.15, .15, len(e))
            ax.scatter(np.full(len(e), g) + jitter, e, s=8, alpha=0.6)
    ax.set_title("oracle energy of labels (eV/atom above the lowest)")
    ax.set_xlabel("generation")
    ax = axes[1, 1]
    bottom = np.zeros(len(gens))
    for state, colour in (("ok", "tab:blue"), ("rejected", "tab:orange"),
                          ("failed", "tab:red")):
        counts = np.array([sum(1 for r in rows if r["generation"] == g and r["status"] == state)
                           for g in gens])
        if state == "ok" or counts.any():
            ax.bar(gens, counts, bottom=bottom, label=state, color=colour)
        bottom += counts
    ax.set_title("labels per generation")
    ax.set_xlabel("generation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
