"""Every bad input or environment problem is one line ``advsample: error: ...`` and exit 2."""

import errno
import os
import sqlite3

import ase.io
import pytest
import torch
from helpers import labelled_nh3

from advsample.cli import error_text, main
from advsample.committee import Committee

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_permissions = pytest.mark.skipif(ROOT, reason="root ignores file permissions")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny saved committee and its state dict."""
    path = tmp_path_factory.mktemp("ckpt") / "committee.pt"
    Committee.build("painn", 2, features=8, interactions=1, cutoff=4.0, n_rbf=8).save(path)
    return path, torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Labelled NH3 frames in an extxyz file."""
    path = tmp_path_factory.mktemp("data") / "nh3.extxyz"
    ase.io.write(path, labelled_nh3(3), format="extxyz")
    return path


def _config(path, **lines):
    """A small run configuration (EMT oracle, initial data from ``frames``)."""
    sections = {"system": "{molecule: NH3}", "oracle": "{type: emt}",
                "committee": "{size: 2, hyperparameters: {features: 8, interactions: 1}}",
                **lines}
    path.write_text("".join(f"{k}: {v}\n" for k, v in sections.items()))
    return path


def _run_dir(tmp_path, frames):
    """An existing run directory: its config and an empty store."""
    from advsample.store import Store

    run = tmp_path / "run"
    run.mkdir()
    _config(run / "config.yaml", initial=f"{{file: {frames}}}")
    Store(run / "labels.db").rows()
    return run


def _committee_case(kind):
    """A bad committee checkpoint of ``kind``: (file, what the message says)."""

    def make(tmp_path, checkpoint, frames):
        path, state = checkpoint
        if kind == "yaml":
            bad = _config(tmp_path / "config.yaml")
        elif kind == "extxyz":
            bad = frames
        elif kind == "truncated":
            bad = tmp_path / "truncated.pt"
            bad.write_bytes(path.read_bytes()[:2000])
        elif kind == "empty":
            bad = tmp_path / "empty.pt"
            bad.write_bytes(b"")
        elif kind == "plain dict":
            bad = tmp_path / "plain.pt"
            torch.save({"weights": torch.zeros(3)}, bad)
        elif kind == "format 7":
            bad = tmp_path / "future.pt"
            torch.save({**state, "format": "advsample.committee/7"}, bad)
            return bad, "committee checkpoint format 7, this advsample reads format 1"
        elif kind == "missing":
            return tmp_path / "none.pt", "does not exist"
        return bad, "not a committee checkpoint"

    return make


BAD_COMMITTEES = ["yaml", "extxyz", "truncated", "empty", "plain dict", "format 7", "missing"]


@pytest.mark.parametrize("command", ["attack", "stability"])
@pytest.mark.parametrize("kind", BAD_COMMITTEES)
def test_bad_committee_checkpoint(tmp_path, capsys, checkpoint, frames, command, kind):
    bad, needle = _committee_case(kind)(tmp_path, checkpoint, frames)
    _assert_one_line(main([command, str(bad), str(frames)]), capsys, str(bad), needle)


def _assert_one_line(code, capsys, *needles, progress=False):
    """Exit status 2 and one line on stderr (besides progress bars, when ``progress``)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    if progress:
        lines = [line for line in lines if line.strip() and "it/s" not in line]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("advsample: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_checkpoint_without_format_key_still_loads(tmp_path, checkpoint):
    _, state = checkpoint
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in state.items() if k != "format"}, old)
    assert Committee.load(old).size == 2


def test_config_problems(tmp_path, capsys, frames):
    bad_oracle = _config(tmp_path / "oracle.yaml",
                         oracle='{type: ase, calculator: "no_such_module:Calc"}')
    _assert_one_line(main(["run", str(bad_oracle)]), capsys, "oracle.yaml", "no_such_module")
    assert not (tmp_path / "runs").exists()  # a run that never started leaves nothing
    not_yaml = tmp_path / "text.yaml"
    not_yaml.write_text("system: [NH3\noracle: {type: emt\n")
    _assert_one_line(main(["run", str(not_yaml)]), capsys, "text.yaml", "not valid YAML")
    _assert_one_line(main(["run", str(tmp_path / "none.yaml")]), capsys, "none.yaml")
    _assert_one_line(main(["train", str(frames), "--config", str(tmp_path / "none.yaml")]),
                     capsys, "none.yaml")
    _assert_one_line(main(["run", str(tmp_path)]), capsys, str(tmp_path), "not a run")
    blocker = tmp_path / "file"
    blocker.write_text("")
    _assert_one_line(main(["run", str(bad_oracle), "--run-dir", str(blocker / "r")]), capsys,
                     str(blocker))


@needs_permissions
def test_unreadable_config(tmp_path, capsys):
    cfg = _config(tmp_path / "secret.yaml")
    cfg.chmod(0)
    try:
        _assert_one_line(main(["run", str(cfg)]), capsys,
                         f"cannot read {cfg}: Permission denied")
    finally:
        cfg.chmod(0o644)


@needs_permissions
def test_read_only_run_directory(tmp_path, capsys, frames):
    run = _run_dir(tmp_path, frames)
    (run / "labels.db").chmod(0o444)
    run.chmod(0o555)
    try:
        _assert_one_line(main(["run", str(run), "--quiet"]), capsys,
                         f"cannot write {run / 'run.lock'}: Permission denied")
    finally:
        run.chmod(0o755)
    # The folder writable again but the store read-only: sqlite's error names the store.
    _assert_one_line(main(["run", str(run), "--quiet"]), capsys, str(run / "labels.db"),
                     "readonly database")
    assert not (run / "run.lock").exists()


@needs_permissions
def test_unwritable_output(tmp_path, capsys, frames):
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    _assert_one_line(main(["train", str(frames), "-o", str(out / "c.pt"), "--config",
                           str(_config(tmp_path / "c.yaml", train="{epochs: 1}"))]),
                     capsys, f"cannot write {out / 'c.pt'}: Permission denied", progress=True)
    assert not list(out.iterdir())


@pytest.mark.parametrize("exc, text", [
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "runs/x/labels.db"),
     "cannot write runs/x/labels.db: Read-only file system"),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/gen.pt"),
     "cannot write runs/x/gen.pt: No space left on device"),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
     "No space left on device (free some space, then run the same command again)"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "runs/x/new"),
     "cannot write runs/x/new: Permission denied"),
    (FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "a.extxyz"),
     "a.extxyz: No such file or directory"),
    (sqlite3.OperationalError("attempt to write a readonly database"),
     "attempt to write a readonly database"),
    (ImportError("No module named 'tblite'"), "No module named 'tblite'"),
    (ValueError("first\n  second"), "first second"),
    (RuntimeError("a bug"), None),
    (KeyError("a bug"), None),
])
def test_error_text(exc, text):
    assert error_text(exc) == text


def test_a_bug_shows_its_traceback_and_a_hint(monkeypatch, capsys):
    import advsample.config_docs

    def broken():
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(advsample.config_docs, "example_yaml", broken)
    assert main(["config", "--example"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert "ZeroDivisionError: oops" in err
    assert err[-1].startswith("advsample: internal error (ZeroDivisionError)")
