"""Plots and a markdown summary of a run directory (see ``advsample.run`` for its layout)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from advsample.store import Store


def generation_metrics(run_dir: Path) -> list[dict]:
    """metrics.json of every evaluated generation, in order."""
    files = sorted((run_dir / "generations").glob("gen_*/metrics.json"))
    return [json.loads(f.read_text()) for f in files]


def status(run_dir: str | Path) -> str:
    """A few lines on where a run stands."""
    run_dir = Path(run_dir)
    if not (run_dir / "labels.db").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no labels.db)")
    store = Store(run_dir / "labels.db")
    rows = store.rows()
    per_gen = defaultdict(lambda: defaultdict(int))
    for r in rows:
        per_gen[r["generation"]][r["status"]] += 1
    lines = [f"run {run_dir}: {len(rows)} structures"]
    for g in sorted(per_gen):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(per_gen[g].items()))
        lines.append(f"  generation {g}: {counts}")
    for m in generation_metrics(run_dir):
        extra = f", barrier error {m['barrier_error']:+.4f} eV" if "barrier_error" in m else ""
        lines.append(f"  committee {m['generation']}: val force RMSE "
                     f"{m['val_forces_rmse']:.4f} eV/Å{extra}")
    stopped = run_dir / "stopped.json"
    if stopped.exists():
        lines.append("  stopped: " + json.loads(stopped.read_text())["reason"])
    else:
        lines.append("  not finished: `advsample run` on this directory continues it")
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    """report/report.md and PNG plots in ``run_dir``; the markdown's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    store = Store(run_dir / "labels.db")
    rows = store.rows()
    metrics = generation_metrics(run_dir)
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
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        e0 = min(r["energy"] for r in ok)
        for g in gens:
            e = [r["energy"] - e0 for r in ok if r["generation"] == g]
            ax.scatter(np.full(len(e), g) + np.random.default_rng(g).uniform(-.15, .15, len(e)),
                       e, s=8, alpha=0.6)
    ax.set_title("oracle energy of labelled structures (eV, above lowest)")
    ax.set_xlabel("generation")
    ax = axes[1, 1]
    labels = [sum(1 for r in rows if r["generation"] == g and r["status"] == "ok") for g in gens]
    failed = [sum(1 for r in rows if r["generation"] == g and r["status"] == "failed")
              for g in gens]
    ax.bar(gens, labels, label="ok")
    ax.bar(gens, failed, bottom=labels, label="failed", color="tab:red")
    ax.set_title("labels per generation")
    ax.set_xlabel("generation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "generations.png", dpi=100)
    plt.close(fig)

    lines = [f"# advsample run report: {run_dir.name}", "",
             "| generation | labels | train F RMSE (eV/Å) | val F RMSE (eV/Å) | "
             "val E RMSE (eV/atom) | barrier (eV) | barrier error (eV) |",
             "|---|---|---|---|---|---|---|"]
    for m in metrics:
        b = f"{m['barrier']:.4f}" if "barrier" in m else "-"
        be = f"{m['barrier_error']:+.4f}" if "barrier_error" in m else "-"
        lines.append(f"| {m['generation']} | {m['labels']} | {m['train_forces_rmse']:.4f} | "
                     f"{m['val_forces_rmse']:.4f} | {m['val_energy_rmse']:.5f} | {b} | {be} |")
    lines += ["", "![generations](generations.png)", ""]
    if metrics and "path_energy" in metrics[0]:
        _umbrella_plots(run_dir, store, metrics, out, plt)
        ref = json.loads((run_dir / "reference.json").read_text())
        lines += [f"Oracle inversion barrier along the umbrella path: {ref['barrier']:.4f} eV.",
                  "", "![umbrella](umbrella.png)", ""]
    stopped = run_dir / "stopped.json"
    if stopped.exists():
        lines.append("Stopped: " + json.loads(stopped.read_text())["reason"] + ".")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _umbrella_plots(run_dir, store, metrics, out, plt):
    from advsample.umbrella import umbrella_coordinate

    ref = json.loads((run_dir / "reference.json").read_text())
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    ax.plot(ref["umbrella"], ref["energy"], "k-", lw=3, label="oracle")
    cmap = plt.get_cmap("viridis")
    for m in metrics:
        ax.plot(ref["umbrella"], m["path_energy"], color=cmap(m["generation"] / max(
            1, metrics[-1]["generation"])), label=f"committee gen {m['generation']}")
    ax.set_xlabel("umbrella coordinate h (Å)")
    ax.set_ylabel("energy along the inversion path (eV)")
    ax.legend(fontsize=7)
    ax = axes[1]
    atoms = store.training_atoms()
    if atoms:
        e0 = min(a.get_potential_energy() for a in atoms)
        ok_rows = [r for r in store.rows() if r["status"] == "ok"]
        gens = np.array([r["generation"] for r in ok_rows])
        h = np.array([umbrella_coordinate(a.positions) for a in atoms])
        e = np.array([a.get_potential_energy() - e0 for a in atoms])
        sc = ax.scatter(h, e, c=gens[: len(h)], cmap="viridis", s=12)
        plt.colorbar(sc, ax=ax, label="generation")
    ax.plot(ref["umbrella"], ref["energy"], "k--", lw=1)
    ax.set_xlabel("umbrella coordinate h (Å)")
    ax.set_ylabel("oracle energy above lowest label (eV)")
    ax.set_title("where the labels lie")
    fig.tight_layout()
    fig.savefig(out / "umbrella.png", dpi=100)
    plt.close(fig)
