"""One process at a time in a run directory: ``run.lock`` names the process that runs it.

``advsample run`` holds :class:`RunLock` on its run directory while the loop and its report
run. The lock is a small JSON file created atomically (``O_CREAT | O_EXCL``)::

    {"pid": 4242, "host": "node17", "started": "2025-01-31T10:02:03+00:00",
     "command": "advsample run runs/nh3"}

A second ``advsample run`` on the same directory refuses with :class:`RunLocked` (one line
naming the holder) while that process is alive. A lock left behind by a dead process (killed,
crashed, machine rebooted), or one that cannot be read, is stale: it is taken over with a
warning. Liveness can only be checked on the same host; a lock from another host is
respected until someone deletes it.

Within one process the lock is not re-entrant: a second RunLock on a directory this process
already holds refuses like any other holder. A lock naming this process's pid that this
process does not hold was left by an earlier process that had the same pid (pids are reused,
e.g. in containers) and is stale.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("advsample")
LOCK_NAME = "run.lock"
_HELD: set[str] = set()  # lock files this process holds (resolved paths)


class RunLocked(ValueError):
    """The run directory is held by another live process; the message is one line."""


def _alive(pid: int) -> bool:
    """True if a process ``pid`` runs on this host (signal 0 checks without signalling; a
    zombie, killed but not yet reaped by its parent, is dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        pass
    except OSError:  # e.g. a pid too large for the platform
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """True if Linux's /proc says ``pid`` is a zombie (False where there is no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _read(path: Path) -> dict | None:
    """The holder recorded in the lock file ``path``; None if it is missing, unreadable or not
    a lock (a file being written right now gets a moment to be complete)."""
    for attempt in range(2):
        try:
            holder = json.loads(path.read_text())
            if (isinstance(holder, dict) and isinstance(holder.get("pid"), int)
                    and isinstance(holder.get("host"), str)):
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if attempt == 0:
            time.sleep(0.2)  # between O_EXCL creation and the write of its content
    return None


def _held_by_us(path: Path) -> bool:
    """True if this very process holds the lock file ``path``."""
    return str(path.resolve()) in _HELD


def _live(path: Path, holder: dict | None) -> bool:
    """True if ``holder`` (read from ``path``) is a process that still holds the lock: alive on
    this host, or on another host (which cannot be checked)."""
    if holder is None:
        return False
    if holder["host"] != socket.gethostname():
        return True
    if holder["pid"] == os.getpid():
        return _held_by_us(path)
    return _alive(holder["pid"])


def _describe(run_dir: Path, holder: dict) -> str:
    """The one-line refusal naming ``holder`` of ``run_dir``."""
    text = (f"{run_dir} is being run by process {holder['pid']} on {holder['host']} since "
            f"{holder.get('started', '?')} ({holder.get('command', '?')}); "
            f"wait for it or stop it")
    if holder["host"] != socket.gethostname():
        text += f" (another host: delete {LOCK_NAME} if that run is dead)"
    return text


def locked_by(run_dir: str | os.PathLike) -> dict | None:
    """The holder of ``run_dir``'s lock if it is live (its dict: pid, host, started, command,
    and ``"this_host"``: False when on another host, where liveness cannot be checked); None
    when the directory is free or its lock is stale."""
    path = Path(run_dir) / LOCK_NAME
    holder = _read(path)
    if not _live(path, holder):
        return None
    return {**holder, "this_host": holder["host"] == socket.gethostname()}


class RunLock:
    """Context manager holding ``run_dir/run.lock`` (the directory must exist).

    ``with RunLock(run_dir): ...`` raises :class:`RunLocked` if another live process holds
    the directory, takes over a stale lock with a warning, and removes the lock on exit (if
    it is still this one's). Not re-entrant: see the module docstring.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.record: dict | None = None  # what this lock wrote, while held

    def __enter__(self) -> RunLock:
        """Take the lock; RunLocked if a live process holds it."""
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        """Release the lock."""
        self.release()

    def acquire(self) -> None:
        """Create the lock file atomically; take over a stale one (a few attempts, in case
        another process takes it over at the same time)."""
        if self.record is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if _live(self.path, holder):
                    raise RunLocked(_describe(self.run_dir, holder)) from None
                self._remove_stale(holder)
                continue
            try:
                os.write(fd, (json.dumps(record) + "\n").encode())
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise
            os.close(fd)
            self.record = record
            _HELD.add(str(self.path.resolve()))
            return
        raise RunLocked(f"{self.run_dir}: could not take {LOCK_NAME} (other processes keep "
                        f"taking it over); try again")

    def _remove_stale(self, holder: dict | None) -> None:
        """Remove the stale lock file whose content was ``holder``, unless another process
        replaced it meanwhile: the file is first renamed to a name of this process (only one
        process can rename it), and put back if it turns out to be a fresh lock."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it; try to create ours again
        moved = _read(aside)
        if moved != holder and _live(self.path, moved):  # a fresh lock: give it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)  # fails if a third process got in: fine
            aside.unlink(missing_ok=True)
            raise RunLocked(_describe(self.run_dir, moved))
        aside.unlink(missing_ok=True)
        if holder is None:
            log.warning("%s: taking over an unreadable lock file %s", self.run_dir, LOCK_NAME)
        else:
            log.warning("%s: taking over a stale lock of process %s on %s since %s (it is no "
                        "longer running)", self.run_dir, holder["pid"], holder["host"],
                        holder.get("started", "?"))

    def release(self) -> None:
        """Remove the lock file if it is still the one this lock wrote."""
        if self.record is None:
            return
        _HELD.discard(str(self.path.resolve()))
        record, self.record = self.record, None
        current = _read(self.path)
        if current == record:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        elif current is not None:
            log.warning("%s: %s was replaced by another process; left in place",
                        self.run_dir, LOCK_NAME)
