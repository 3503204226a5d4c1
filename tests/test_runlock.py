"""One process per run directory: run.lock refuses a live holder and takes over a stale one."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from advsample.cli import main
from advsample.runlock import LOCK_NAME, RunLock, RunLocked, locked_by

HOLDER = textwrap.dedent("""
    import sys, time
    from advsample.runlock import RunLock
    with RunLock(sys.argv[1]):
        time.sleep(120)
""")


def _wait_for(path, proc, seconds=60.0):
    """Wait until ``path`` exists (and holds JSON) while ``proc`` is alive."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, "the lock holder died"
        try:
            json.loads(path.read_text())
            return
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


@pytest.fixture
def held(tmp_path):
    """A run directory whose lock is held by a live subprocess (killed at the end)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for(run_dir / LOCK_NAME, proc)
        yield SimpleNamespace(run_dir=run_dir, proc=proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def _write_lock(run_dir, **fields):
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": "2025-01-01T00:00:00+00:00", "command": "advsample run x", **fields}
    (run_dir / LOCK_NAME).write_text(json.dumps(record))


def test_lock_file_is_created_and_removed(tmp_path):
    assert locked_by(tmp_path) is None
    with RunLock(tmp_path) as lock:
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record == lock.record
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["started"] and record["command"] == " ".join(sys.argv)
        assert locked_by(tmp_path)["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()
    assert locked_by(tmp_path) is None


def test_live_holder_refuses_then_its_stale_lock_is_taken_over(held, caplog):
    pid = held.proc.pid
    with pytest.raises(RunLocked, match=rf"run is being run by process {pid} on .*; wait for"):
        with RunLock(held.run_dir):
            pass
    holder = locked_by(held.run_dir)
    assert holder["pid"] == pid and holder["this_host"]
    assert json.loads((held.run_dir / LOCK_NAME).read_text())["pid"] == pid  # untouched

    held.proc.send_signal(signal.SIGKILL)  # dies without removing its lock
    if sys.platform == "linux":  # not reaped yet: a zombie is dead too
        deadline = time.time() + 30
        while locked_by(held.run_dir) is not None and time.time() < deadline:
            time.sleep(0.05)
        assert locked_by(held.run_dir) is None
    held.proc.wait()
    assert (held.run_dir / LOCK_NAME).exists() and locked_by(held.run_dir) is None
    with caplog.at_level(logging.WARNING, logger="advsample"):
        with RunLock(held.run_dir):
            assert json.loads((held.run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"stale lock of process {pid}" in caplog.text
    assert not (held.run_dir / LOCK_NAME).exists()


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"pid": "x", "host": 3}'])
def test_corrupt_lock_is_taken_over(tmp_path, caplog, content):
    (tmp_path / LOCK_NAME).write_text(content)
    assert locked_by(tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="advsample"), RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text()) == lock.record
    assert "unreadable lock" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_this_process_is_not_reentrant_but_a_reused_pid_is_stale(tmp_path, caplog):
    # Held by this very process: a second RunLock refuses like any other holder.
    with RunLock(tmp_path):
        with pytest.raises(RunLocked, match=f"process {os.getpid()} "):
            RunLock(tmp_path).acquire()
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()
    # Naming our pid but not held by us: left by an earlier process with the same pid.
    _write_lock(tmp_path)
    assert locked_by(tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="advsample"), RunLock(tmp_path):
        pass
    assert "stale lock" in caplog.text


def test_lock_of_another_host_is_respected(tmp_path):
    _write_lock(tmp_path, host="elsewhere.invalid", pid=1)
    with pytest.raises(RunLocked, match="another host: delete run.lock if that run is dead"):
        RunLock(tmp_path).acquire()
    assert locked_by(tmp_path)["this_host"] is False
    assert (tmp_path / LOCK_NAME).exists()


def test_a_lock_replaced_meanwhile_is_left_in_place(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="advsample"), RunLock(tmp_path):
        _write_lock(tmp_path, pid=1, started="later")
    assert json.loads((tmp_path / LOCK_NAME).read_text())["started"] == "later"
    assert "replaced by another process" in caplog.text


# ------------------------------------------------------------------ the command line
def test_cli_run_on_a_locked_directory_is_one_line(held, capsys):
    (held.run_dir / "config.yaml").write_text("system: {molecule: NH3}\n")
    for argv in (["run", str(held.run_dir)],
                 ["run", str(held.run_dir / "config.yaml"), "--run-dir", str(held.run_dir)]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"advsample: error: {held.run_dir} is being run by process "
                                   f"{held.proc.pid} on ")
    assert json.loads((held.run_dir / LOCK_NAME).read_text())["pid"] == held.proc.pid


def test_python_run_refuses_a_locked_directory_too(held):
    from advsample.run import run

    (held.run_dir / "config.yaml").write_text("system: {molecule: NH3}\n")
    with pytest.raises(RunLocked, match=f"process {held.proc.pid}"):
        run(held.run_dir)
    assert json.loads((held.run_dir / LOCK_NAME).read_text())["pid"] == held.proc.pid


def test_cli_status_names_the_holder(held, capsys):
    from advsample.store import Store

    Store(held.run_dir / "labels.db").rows()  # an empty run
    assert main(["status", str(held.run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"running now: process {held.proc.pid} on {socket.gethostname()}" in out


class _FakeRun:
    """Stands in for ActiveLearning: records whether the lock is held while it runs."""

    def __init__(self, run_dir, interrupt=False):
        self.run_dir, self.interrupt, self.holder = run_dir, interrupt, None

    def run(self):
        """Look at the lock, then finish (or be interrupted)."""
        self.holder = locked_by(self.run_dir)
        if self.interrupt:
            raise KeyboardInterrupt
        return {"reason": "done", "labels": 0, "failed": 0}


@pytest.mark.parametrize("interrupt", [False, True])
def test_cli_run_holds_the_lock_until_done(tmp_path, monkeypatch, capsys, interrupt):
    import advsample.report
    import advsample.run

    runs = []

    def fake_start(config, run_dir, progress=True):
        assert run_dir.is_dir() and (run_dir / LOCK_NAME).exists()
        runs.append(_FakeRun(run_dir, interrupt))
        return runs[-1]

    monkeypatch.setattr(advsample.run, "start", fake_start)
    monkeypatch.setattr(advsample.report, "write_report", lambda run_dir: run_dir / "r.md")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("system: {molecule: NH3}\n")
    code = main(["run", str(cfg), "--run-dir", str(tmp_path / "runs" / "c"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert runs[0].holder["pid"] == os.getpid()
    assert not (tmp_path / "runs" / "c" / LOCK_NAME).exists()
    if interrupt:
        assert code == 130
        assert err[-1] == "advsample: interrupted; the run resumes with the same command"
    else:
        assert code == 0


def test_cli_run_that_never_starts_leaves_no_lock_or_empty_directory(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("system: {molecule: NH3}\ncommittee: {size: one}\n")
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "runs" / "c")]) == 2
    assert "committee.size" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
