"""benchmarks/common.py on synthetic histories (no advsample code, no real benchmark)."""

import functools
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py, imported as the drivers import it)


def row(gen, labels, err, stable, **extra):
    return {"generation": gen, "labels": labels,
            "path": {"abs_barrier_error": err}, "stability": {"fraction_stable": stable},
            **extra}


CRITERIA = {"path.abs_barrier_error": ("<=", 0.02), "stability.fraction_stable": (">=", 0.97)}
# repeat 0 reaches the target at generation 2 (40 labels): generation 1 has only the error
REPEAT0 = [row(0, 0, 0.1, 0.5), row(1, 20, 0.01, 0.9), row(2, 40, 0.015, 0.98),
           row(3, 60, 0.001, 1.0)]
# repeat 1: generation 1 would pass on stability but its error was not evaluated (NaN/None)
REPEAT1 = [row(0, 0, 0.1, 0.5), row(1, 20, None, 1.0), row(2, 40, math.nan, 1.0),
           row(3, 60, 0.02, 0.97)]
REPEAT2 = [row(0, 0, 0.1, 0.5), row(1, 20, 0.05, 1.0), row(2, 40, 0.01, 0.9)]  # never


def test_metric_dotted_access():
    r = row(1, 20, 0.5, None, wall=3)
    assert common.metric(r, "path.abs_barrier_error") == 0.5
    assert common.metric(r, "wall") == 3.0
    for key in ("stability.fraction_stable", "missing", "path.missing", "wall.x"):
        assert math.isnan(common.metric(r, key))


def test_labels_to_target_per_repeat():
    assert common.labels_to_target(REPEAT0, CRITERIA) == 40
    assert common.labels_to_target(REPEAT1, CRITERIA) == 60  # NaN/None never satisfy
    assert common.labels_to_target(REPEAT2, CRITERIA) is None
    assert common.labels_to_target(REPEAT0, {"path.abs_barrier_error": ("<", 0.015)}) == 20
    assert common.labels_to_target(REPEAT0, {"stability.fraction_stable": (">", 0.98)}) == 60
    renamed = [dict(r, total=r["labels"] + 100) for r in REPEAT0]
    assert common.labels_to_target(renamed, CRITERIA, labels_key="total") == 140
    summary = common.target_summary({"a": [REPEAT0, REPEAT1, REPEAT2]}, CRITERIA)["a"]
    assert summary["per_repeat"] == [40, 60, None]
    assert summary["median"] == 60 and summary["reached"] == 2 and summary["repeats"] == 3
    assert summary["hi"] == math.inf


def test_meeting_by_generation_counts_judged_repeats_and_falling_back():
    # repeat 3 meets the target at generation 1 and loses it at 2
    repeat3 = [row(0, 0, 0.1, 0.5), row(1, 20, 0.01, 1.0), row(2, 40, 0.03, 1.0)]
    e = common.meeting_by_generation({"a": [REPEAT0, REPEAT1, REPEAT2, repeat3]},
                                     CRITERIA)["a"]
    assert e["generation"] == [0, 1, 2, 3]
    assert e["met"] == [0, 1, 1, 2]
    assert e["of"] == [4, 3, 3, 2]  # repeat 1's NaN/None errors are not judged
    assert e["labels"] == [0, 20, 40, 60]
    text = common.table_meeting_by_generation({"a": [REPEAT0, repeat3]}, CRITERIA)
    assert "| 1 | 1/2 (20) |" in text and "| 2 | 1/2 (40) |" in text
    assert "| 3 | 1/1 (60) |" in text


def test_median_ci_known_values():
    med, lo, hi = common.median_ci([5, 1, 3, 2, 4])
    assert med == 3 and lo <= med <= hi and 1 <= lo and hi <= 5
    med, lo, hi = common.median_ci([4, 1, 2, 3])
    assert med == 2.5 and lo <= med <= hi
    assert common.median_ci([7.0]) == (7.0, 7.0, 7.0)
    assert common.median_ci([2.0, math.nan, 4.0])[0] == 3.0  # NaN is dropped
    assert all(math.isnan(v) for v in common.median_ci([math.nan]))
    assert all(math.isnan(v) for v in common.median_ci([]))
    values = [3.0, 9.0, 1.0, 4.0, 7.0, 2.0, 8.0]
    assert common.median_ci(values, seed=3) == common.median_ci(values, seed=3)
    narrow = common.median_ci(values, level=0.5)
    wide = common.median_ci(values, level=0.99)
    assert wide[1] <= narrow[1] <= narrow[0] <= narrow[2] <= wide[2]


def test_median_ci_censored():
    med, lo, hi = common.median_ci([10, None, None])
    assert med == math.inf and lo == 10 and hi == math.inf
    med, lo, hi = common.median_ci([10, 20, None])
    assert med == 20 and lo == 10 and hi == math.inf
    assert common.median_ci([1, None])[0] == math.inf  # even count, upper middle censored
    assert common.median_ci([None, None]) == (math.inf, math.inf, math.inf)


def test_curves_align_by_generation():
    c = common.curves([REPEAT0, REPEAT2], "path.abs_barrier_error")
    assert c["generation"] == [0, 1, 2, 3]
    assert c["values"][3][0] == 0.001 and math.isnan(c["values"][3][1])
    assert c["n"] == [2, 2, 2, 1]
    assert c["median"][1] == pytest.approx(0.03) and c["median"][3] == 0.001
    assert c["labels"] == [0, 20, 40, 60]
    assert all(lo <= m <= hi for m, lo, hi in zip(c["median"], c["lo"], c["hi"]))


def counted_job(counter: Path, fail: set, seed: int, run_dir: Path) -> list[dict]:
    """Top-level (picklable) job: logs its call, fails for seeds in ``fail``."""
    with counter.open("a") as f:
        f.write(f"{run_dir.parent.name} {seed}\n")
    if seed in fail:
        raise RuntimeError(f"boom {seed}")
    (run_dir / "own_file.txt").write_text("the job may use its run directory")
    return [row(0, 0, 0.1 * seed, 0.5), row(1, 20, 0.01 * seed, 1.0)]


def calls(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


@pytest.mark.parametrize("workers", [1, 2])
def test_run_repeats_caches_resumes_and_survives_failures(tmp_path, workers, capsys):
    counter, work = tmp_path / "calls.txt", tmp_path / "work"
    methods = {"a": functools.partial(counted_job, counter, {11}),
               "b": functools.partial(counted_job, counter, set())}
    out = common.run_repeats(methods, 2, work, workers=workers, first_seed=10)
    assert sorted(calls(counter)) == ["a 10", "a 11", "b 10", "b 11"]
    assert len(out["a"]) == 1 and len(out["b"]) == 2
    assert out["b"][1][1]["path"]["abs_barrier_error"] == pytest.approx(0.11)
    assert "boom 11" in (work / "a" / "repeat_1" / "error.txt").read_text()
    assert not (work / "a" / "repeat_1" / "history.json").exists()
    assert (work / "a" / "repeat_0" / "own_file.txt").exists()
    printed = capsys.readouterr().out
    assert printed.count(" s\n") == 4 and "FAILED" in printed

    # re-run with the failure fixed: only the failed job runs again
    methods["a"] = functools.partial(counted_job, counter, set())
    out = common.run_repeats(methods, 2, work, workers=workers, first_seed=10)
    assert len(calls(counter)) == 5 and calls(counter)[-1] == "a 11"
    assert len(out["a"]) == 2 and not (work / "a" / "repeat_1" / "error.txt").exists()
    assert common.run_repeats(methods, 2, work, workers=workers, first_seed=10) == out
    assert len(calls(counter)) == 5
    assert common.load_histories(["a", "b", "c"], 2, work) == out  # "c" never ran


def test_run_repeats_leaves_a_run_directory_another_driver_holds(tmp_path, capsys):
    """Two drivers on one work dir: a job whose run directory is locked by a live process
    (here one on another host) fails naming it and never runs; the others run; a job that
    another driver finished after the job list was made returns that history unrun."""
    counter, work = tmp_path / "calls.txt", tmp_path / "work"
    held = work / "a" / "repeat_0"
    held.mkdir(parents=True)
    (held / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere",
                                               "started": "now", "command": "driver 2"}))
    out = common.run_repeats({"a": functools.partial(counted_job, counter, set())}, 2, work)
    assert calls(counter) == ["a 1"]  # repeat 0 never ran
    assert "being run by process 1 on elsewhere" in (held / "error.txt").read_text()
    assert (held / "run.lock").exists() and not (held / "history.json").exists()
    assert len(out["a"]) == 1 and "FAILED" in capsys.readouterr().out

    finished = [row(0, 0, 0.5, 1.0)]
    (held / "run.lock").unlink()
    (held / "history.json").write_text(json.dumps(finished))  # the other driver's result
    job = functools.partial(counted_job, counter, set())
    assert common._call(job, 0, held)[:2] == (finished, None)
    assert calls(counter) == ["a 1"] and not (held / "run.lock").exists()


def test_relativise():
    root = str(common.REPO)
    data = {"work": f"{root}/runs/x", "path": common.REPO / "docs" / "a.md", "root": root,
            "cmd": f"python {root}/benchmarks/a.py --out {root}/docs",
            "other": "/usr/lib/x", "sibling": f"{root}2/x", "n": 3, "none": None,
            "list": [(f"{root}/a", 1.5)], "nan": math.nan}
    out = common.relativise(data)
    assert out["work"] == "runs/x" and out["path"] == "docs/a.md" and out["root"] == "."
    assert out["cmd"] == "python benchmarks/a.py --out docs"
    assert out["other"] == "/usr/lib/x" and out["sibling"] == f"{root}2/x"
    assert out["n"] == 3 and out["none"] is None and out["list"] == [["a", 1.5]]
    assert math.isnan(out["nan"]) and common.relativise(data, strict=True)["nan"] is None
    assert data["work"] == f"{root}/runs/x"  # the input is not modified
    assert common.relative(common.REPO / "docs" / "x.json") == "docs/x.json"
    assert common.relative("/somewhere/else/file.txt") == "file.txt"
    shared = common.REPO.parent / "shared" / "data" / "x.extxyz"  # the data beside the repo
    assert common.relative(shared) == "../shared/data/x.extxyz"


RESULTS = {"attack": [REPEAT0, REPEAT1, REPEAT2],
           "random": [[row(0, 0, 0.1, 0.5), row(1, 20, 0.08, 0.6)]] * 2}


def test_table_by_generation():
    text = common.table_by_generation(RESULTS, {"path.abs_barrier_error": "dE", "labels": "n"},
                                      fmt={"path.abs_barrier_error": ".3f", "labels": ".0f"})
    lines = text.strip().splitlines()
    assert lines[0] == "| generation | attack: dE | attack: n | random: dE | random: n |"
    assert lines[1] == "|---|---|---|---|---|"
    assert len(lines) == 2 + 4  # header, rule, generations 0..3
    assert lines[2] == "| 0 | 0.100 | 0 | 0.100 | 0 |"  # a single-point interval: just the value
    # repeat 1 has no error at generations 1 and 2, repeat 2 has no generation 3
    assert lines[3] == "| 1 | 0.030 [0.010, 0.050] (n=2) | 20 | 0.080 | 20 |"
    assert lines[4] == "| 2 | 0.013 [0.010, 0.015] (n=2) | 40 | – | – |"
    assert lines[5] == "| 3 | 0.011 [0.001, 0.020] (n=2) | 60 (n=2) | – | – |"
    never = {"a": [[{"generation": 0, "labels": 0, "x": None}]] * 2}
    assert "| 0 | – |" in common.table_by_generation(never, ["x"])  # not evaluated anywhere
    assert common.table_by_generation(RESULTS, ["labels"]).startswith(
        "| generation | attack: labels | random: labels |")


def test_table_labels_to_target():
    text = common.table_labels_to_target(RESULTS, CRITERIA)
    assert "| attack | 40, 60, not reached | 60 | [40, ∞] | 2/3 |" in text
    assert "| random | not reached, not reached | not reached | [∞, ∞] | 0/2 |" in text
    assert "90% CI" in text
    assert common.format_value(None) == "not reached" and common.format_value(math.nan) == "–"
    assert common.format_value(0.123456) == "0.123"
    assert common.format_ci(1.0, 0.5, math.inf, ".2f") == "1.00 [0.50, ∞]"
    assert common.criteria_text(CRITERIA) == (
        "path.abs_barrier_error <= 0.02 and stability.fraction_stable >= 0.97")


def test_plot_curves_writes_png(tmp_path):
    path = common.plot_curves(RESULTS, {"path.abs_barrier_error": "|dE|",
                                        "stability.fraction_stable": "stable"},
                              tmp_path / "sub" / "curves.png", log={"path.abs_barrier_error"},
                              targets={"path.abs_barrier_error": 0.02})
    assert path == tmp_path / "sub" / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_write_json_and_markdown_have_no_absolute_repo_path(tmp_path):
    root = str(common.REPO)
    settings = {"work_dir": common.REPO / "runs" / "benchmarks" / "x", "repeats": 3,
                "config": {"initial": {"file": f"{root}/runs/x/initial_0.extxyz"}}}
    results = {"attack": [[dict(r, file=f"{root}/runs/x/a.traj") for r in REPEAT1]]}
    summary = {"labels_to_target": common.target_summary(results, CRITERIA)}
    path = common.write_json("bench", settings, results, summary, out_dir=tmp_path)
    assert path == tmp_path / "bench.json"
    text = path.read_text()
    assert root not in text and "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["settings"]["work_dir"] == "runs/benchmarks/x"
    assert data["settings"]["config"]["initial"]["file"] == "runs/x/initial_0.extxyz"
    assert data["runs"]["attack"][0][2]["path"]["abs_barrier_error"] is None
    assert data["summary"]["labels_to_target"]["attack"]["per_repeat"] == [60]
    md = common.write_markdown("bench", f"Settings: `{json.dumps({'w': root + '/runs'})}`",
                               out_dir=tmp_path)
    assert md.read_text() == 'Settings: `{"w": "runs"}`'


def test_bench_args(tmp_path):
    p = common.bench_args("demo", name="demo", repeats=5, generations=4)
    p.add_argument("--generations", type=int)
    args = p.parse_args([])
    assert (args.repeats, args.workers, args.aggregate_only, args.generations) == (5, 1, False, 4)
    assert args.work_dir == common.REPO / "runs" / "benchmarks" / "demo"
    assert args.out_dir == common.DOCS
    args = p.parse_args(["--repeats", "2", "--workers", "3", "--work-dir", str(tmp_path),
                         "--aggregate-only", "--out-dir", str(tmp_path / "o")])
    assert (args.repeats, args.workers, args.aggregate_only) == (2, 3, True)
    assert args.work_dir == tmp_path and args.out_dir == tmp_path / "o"
