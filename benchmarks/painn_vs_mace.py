"""PaiNN vs MACE committees: accuracy per label on the labels of an NH3 attack loop.

    python benchmarks/painn_vs_mace.py           # after benchmarks/ammonia.py; ~15 min, 2 cores
    python benchmarks/painn_vs_mace.py --run RUN_DIR --test TEST.extxyz --generations 0 3 6

Takes the labelled structures of one active-learning run (``--run``: a run directory with its
labels.db; default runs/benchmarks/ammonia/attack/repeat_0, the first attack loop of
benchmarks/ammonia.py) and, for the training set of each of ``--generations`` (the loop's
counting; missing ones are skipped), trains a PaiNN and a MACE committee (4 members, the same
training settings, split and seed, no bootstrap) from scratch, then measures energy and force
RMSE on ``--test`` (default: the file of the run's test_set evaluator, the 1000 K GFN2-xTB MD
of the ammonia benchmark). Model x --repeats training seeds (seed = repeat), each resumable
per generation in <work-dir>/<model>/repeat_<k>/. Needs the mace extra. Writes
<out-dir>/painn_vs_mace.{md,json} and painn_vs_mace.png; --aggregate-only trains nothing
(without cached results it rewrites the docs from <out-dir>/painn_vs_mace.json).
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

import common as c
import yaml

MODELS = {
    "painn": {"features": 32, "interactions": 2, "cutoff": 4.0, "n_rbf": 16},
    "mace": {"elements": [1, 7], "cutoff": 4.0, "channels": 16, "max_L": 1, "max_ell": 2,
             "correlation": 2, "interactions": 2, "n_rbf": 8, "dtype": "float32"},
}
KEYS = {"labels": "structures", "test_energy_rmse": "test E RMSE (eV/atom)",
        "test_forces_rmse": "test F RMSE (eV/Å)", "train_seconds": "training s"}
NOTES = "(written by hand"  # a hand-written reading in the .md, kept by --aggregate-only


def run_test_set(run: Path) -> Path | None:
    """The file of the first test_set evaluator in ``run``'s config.yaml, if any."""
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() \
        else {}
    files = [e["file"] for e in (cfg or {}).get("evaluate", []) if e.get("type") == "test_set"]
    return Path(files[0]) if files else None


def train_and_test(model: str, s: dict, seed: int, work: Path) -> list[dict]:
    """Per generation of ``s["generations"]``: a fresh ``model`` committee trained on the
    run's labels up to it, and its errors on the test set (each cached in ``work``)."""
    import ase.io
    import torch

    from advsample.committee import Committee
    from advsample.runtime import tune_allocator
    from advsample.store import Store
    from advsample.structures import Batch
    from advsample.train import TrainConfig, evaluate, fit

    torch.set_num_threads(1)
    tune_allocator()
    store, test, rows = Store(Path(s["run"]) / "labels.db"), None, []  # test read when needed
    for g in s["generations"]:
        cache = Path(work) / f"generation_{g}.json"
        if not cache.exists():
            if test is None:
                test = Batch.from_atoms(ase.io.read(s["test"], ":"))
            data = Batch.from_atoms(store.training_atoms(max_generation=g))
            committee = Committee.build(model, 4, seed=seed, **MODELS[model])
            start = time.time()
            result = fit(committee, data, TrainConfig(
                epochs=s["epochs"], lr=3e-3, batch_size=16, forces_weight=10.0, patience=60,
                lr_patience=20, bootstrap=False, seed=seed))
            err = evaluate(committee, test)
            cache.write_text(json.dumps({
                "model": model, "generation": g, "labels": data.n_structures,
                "train_seconds": time.time() - start, "val_forces_rmse": result.val_forces_rmse,
                "test_energy_rmse": err["energy_rmse"], "test_forces_rmse": err["forces_rmse"]}))
        rows.append(json.loads(cache.read_text()))
    return rows


def markdown(results: c.Results, settings: dict, notes: str) -> str:
    fmt = {"labels": ".0f", "test_energy_rmse": ".4f", "test_forces_rmse": ".3f",
           "train_seconds": ".0f"}
    return ("# PaiNN vs MACE committees on the NH3 attack-loop labels\n\n"
            f"Command: `{settings['command']}`\n\nLabels: `{settings['run']}/labels.db`; test "
            f"set: `{settings['test']}`. Models: `{json.dumps(MODELS)}`; 4 members each, "
            f"{settings['epochs']} epochs max, same split, loss and seed. Generation: of the "
            "attack loop (0 = its initial data); structures: training structures up to it "
            "(initial ones included). Medians over training seeds (repeats = "
            f"{settings['repeats']}).\n\n" + c.table_by_generation(results, KEYS, fmt)
            + "\n![per label](painn_vs_mace.png)\n\n" + notes)


def main(argv=None) -> None:
    default_run = c.REPO / "runs" / "benchmarks" / "ammonia" / "attack" / "repeat_0"
    p = c.bench_args(__doc__.splitlines()[0], "painn_vs_mace", repeats=1, workers=2)
    p.add_argument("--run", type=Path, default=default_run, help="run directory (labels.db)")
    p.add_argument("--test", type=Path, help="extxyz test set (default: the run's test_set)")
    p.add_argument("--generations", type=int, nargs="+", default=[0, 2, 4, 6])
    p.add_argument("--epochs", type=int, default=300)
    args = p.parse_args(argv)
    out, work, run = Path(args.out_dir), Path(args.work_dir), args.run.resolve()
    test = args.test or run_test_set(run)
    if not args.aggregate_only:
        if not (run / "labels.db").exists() or test is None or not Path(test).exists():
            sys.exit(f"need {c.relative(run)}/labels.db and a test set (--test): run "
                     "benchmarks/ammonia.py first, or pass --run and --test")
        from advsample.store import Store

        last = max(r["generation"] for r in Store(run / "labels.db").rows(status="ok"))
        args.generations = [g for g in args.generations if g <= last]
    flags = [f for f in (sys.argv[1:] if argv is None else argv) if f != "--aggregate-only"]
    settings = {"models": MODELS, "run": c.relative(run), "test": test and c.relative(test),
                "generations": args.generations, "epochs": args.epochs, "repeats": args.repeats,
                "bootstrap": False, "command": " ".join(["python benchmarks/painn_vs_mace.py",
                                                         *flags])}
    if not args.aggregate_only:
        s = {**settings, "run": str(run), "test": str(Path(test).resolve())}
        results = c.run_repeats({m: partial(train_and_test, m, s) for m in MODELS},
                                args.repeats, work, args.workers)
    elif not (results := c.load_histories(MODELS, args.repeats, work)):
        print(f"nothing cached in {c.relative(work)}: using {c.relative(out)}/painn_vs_mace.json")
        old = json.loads((out / "painn_vs_mace.json").read_text())
        settings, results = old["settings"], old["runs"]
    summary = {m: {k: c.median_ci([h[-1][k] for h in runs]) for k in KEYS}
               for m, runs in results.items()}
    md = out / "painn_vs_mace.md"
    text = md.read_text() if md.exists() and args.aggregate_only else ""
    notes = text[text.rfind("\n", 0, text.find(NOTES)) + 1:] if NOTES in text else ""
    c.write_json("painn_vs_mace", settings, results, summary, out)
    c.plot_curves(results, dict(list(KEYS.items())[1:3]), out / "painn_vs_mace.png",
                  log={"test_energy_rmse", "test_forces_rmse"}, xlabel="training structures")
    print(c.write_markdown("painn_vs_mace", markdown(results, settings, notes), out).read_text())


if __name__ == "__main__":
    main()
