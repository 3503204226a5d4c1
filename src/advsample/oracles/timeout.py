"""A time limit per label: :class:`TimeLimitedOracle` runs another oracle in a child process.

Why a child process: a label call that hangs (an SCF that never ends, a stuck external code)
must not stall a run, and neither signals nor threads can interrupt a C extension that does not
return to the interpreter. A child process can always be killed, so every label is computed in
one, and a call that is not answered within ``timeout_s`` seconds kills the child and becomes a
failed :class:`LabelResult` ("timed out after N s").

The child is a ``python -c`` subprocess (not :mod:`multiprocessing`: the daemonic workers of a
process pool or a Dask cluster may not start multiprocessing children). Its ``sys.path`` starts
with the parent's, passed on its command line, so it imports every module the parent can: this
package even when it is not installed, and oracles or calculators defined in scripts or test
directories. It inherits the environment (``OMP_NUM_THREADS``, ...) and the working directory
of the moment it starts. Children are started on demand and kept, idle, for later calls in the
same process; one child serves one oracle (compared by its pickle).

Protocol, on the child's stdin and stdout: frames of an 8-byte big-endian length followed by that
many bytes of pickle. The parent first sends the pickled oracle; the child loads it, builds one
calculator (oracles import their libraries there) and answers None when ready, or the error
message; the time limit does not include this start (importing the package and the oracle's
libraries takes seconds), which must end within ``START_TIMEOUT_S``.
Then each request is one pickled ``Atoms`` and its answer one pickled :class:`LabelResult`. The
child moves its real stdout to a private descriptor and points descriptor 1 at stderr, so what
oracle libraries print cannot corrupt the protocol. The child exits when its stdin closes
(the parent closed it or exited) and, on Linux, is killed when its parent dies, even mid-call.

Units: times in seconds; labels as in :mod:`advsample.oracles.base` (eV, eV/Å).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import numbers
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from advsample.oracles.base import LabelResult, Oracle, describe_exception

START_TIMEOUT_S = 120.0  # a new child must have loaded its oracle within this many seconds
HEADER = struct.Struct(">Q")  # frame header: the length of the pickle that follows
MAX_FRAME = 1 << 32  # bytes; a longer frame is garbage (a reply for 10^7 atoms is ~0.3 GB)
CHUNK = 1 << 20  # bytes read at most at once
PR_SET_PDEATHSIG = 1  # prctl option of Linux: a signal for this process when its parent dies
CHILD_CODE = (  # the child's program; its arguments are the parent's sys.path
    "import sys; sys.path[:0] = sys.argv[1:]; "
    "from advsample.oracles.timeout import _serve; _serve()"
)


class TimeLimitedOracle(Oracle):
    """``inner``'s labels, each computed in a child process that is killed after ``timeout_s`` s.

    A call that takes longer, a child that dies, or a child that answers garbage gives a failed
    result naming the reason, and the next call starts a new child. ``seconds`` of a result is
    the wall time of :meth:`label` in the calling process, including the start of a child when
    one is started. ``inner`` must pickle; ``settings`` are ``inner``'s plus ``"timeout_s"``.
    """

    def __init__(self, inner: Oracle, timeout_s: float):
        number = isinstance(timeout_s, numbers.Real) and not isinstance(timeout_s, bool)
        if not (number and 0 < timeout_s < math.inf):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.inner = inner
        self.timeout_s = float(timeout_s)
        self.name = inner.name
        self.settings = {**inner.settings, "timeout_s": self.timeout_s}
        self.child_pid: int | None = None  # the child of the latest call, in this process
        self._key = pickle.dumps(inner, protocol=pickle.HIGHEST_PROTOCOL)

    def calculator(self) -> Calculator:
        """``inner``'s calculator, run in the calling process: it has no time limit."""
        return self.inner.calculator()

    def label(self, atoms: Atoms) -> LabelResult:
        """``inner.label(atoms)`` computed in a child process, or a failed result after
        ``timeout_s`` seconds (the child is then killed); never raises an Exception.

        An interrupt (KeyboardInterrupt, ...) kills the child and propagates.
        """
        start = time.perf_counter()
        child = None
        try:
            child = _checkout(self._key)
            if child is None:
                child = _Child()
                child.start(self._key)
            self.child_pid = child.pid
            result = child.label(atoms, self.timeout_s)
        except BaseException as exc:
            code = None if child is None else child.kill()
            if not isinstance(exc, Exception):
                raise
            return LabelResult.failed(self._reason(exc, code), time.perf_counter() - start)
        _checkin(self._key, child)
        result.seconds = time.perf_counter() - start
        return result

    def close(self) -> None:
        """Kill the idle children of this process that serve ``inner``; a later call starts a
        new one. Children also exit by themselves when this process exits."""
        with _LOCK:
            children = _IDLE.pop(self._key, [])
        for child in children:
            child.kill()

    def _reason(self, exc: Exception, code: int | None) -> str:
        """The failure message for ``exc`` raised by a call whose child exited with ``code``."""
        if isinstance(exc, TimeoutError):
            return f"timed out after {self.timeout_s:g} s"
        if isinstance(exc, (_ChildDied, BrokenPipeError)):
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            return f"oracle child process died ({how})"
        text = str(exc) if isinstance(exc, _ChildError) else describe_exception(exc)
        return f"oracle child process failed: {text}"

    def __getstate__(self) -> dict[str, Any]:
        """The attributes without ``child_pid``: children belong to the process that started
        them (an unpickled copy uses the idle children of its own process)."""
        return {**self.__dict__, "child_pid": None}


class _ChildDied(Exception):
    """The child closed its stdout: it exited or was killed."""


class _ChildError(Exception):
    """The child could not load the oracle, did not start in time, or answered garbage."""


class _Child:
    """A child process serving one oracle; the parent's end of the protocol."""

    def __init__(self):
        path = [p for p in map(os.path.abspath, sys.path) if os.path.exists(p)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_CODE, *path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # its own process group: killed as a whole, immune to ^C
        )
        self.pid = self.proc.pid
        self._poller = select.poll()
        self._poller.register(self.proc.stdout, select.POLLIN)

    def start(self, key: bytes) -> None:
        """Send the pickled oracle ``key`` and wait until the child has loaded it."""
        _write_frame(self.proc.stdin, key)
        try:
            error = self._receive(time.perf_counter() + START_TIMEOUT_S)
        except TimeoutError:
            raise _ChildError(f"not ready within {START_TIMEOUT_S:g} s") from None
        if error is not None:
            raise _ChildError(f"cannot load the oracle: {error}")

    def label(self, atoms: Atoms, timeout_s: float) -> LabelResult:
        """The child's LabelResult for ``atoms``; TimeoutError after ``timeout_s`` seconds."""
        _write_frame(self.proc.stdin, pickle.dumps(atoms.copy(), protocol=pickle.HIGHEST_PROTOCOL))
        result = self._receive(time.perf_counter() + timeout_s)
        if not isinstance(result, LabelResult):
            raise _ChildError(f"bad reply: a {type(result).__name__}, not a LabelResult")
        return result

    def kill(self) -> int:
        """SIGKILL the child and its process group, reap it and close the pipes; its exit code
        (negative: the signal that ended it)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        code = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        return code

    def _receive(self, deadline: float) -> Any:
        """The next frame from the child, unpickled; TimeoutError at ``deadline``
        (:func:`time.perf_counter`), _ChildDied when its stdout closes first."""
        length = HEADER.unpack(self._read(HEADER.size, deadline))[0]
        if length > MAX_FRAME:
            raise _ChildError(f"bad reply: a frame of {length} bytes")
        data = self._read(length, deadline)
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise _ChildError(f"bad reply: {describe_exception(exc)}") from exc

    def _read(self, size: int, deadline: float) -> bytes:
        """Exactly ``size`` bytes from the child's stdout, read as they arrive until
        ``deadline``."""
        data = bytearray()
        while len(data) < size:
            wait_ms = (deadline - time.perf_counter()) * 1000
            if wait_ms <= 0 or not self._poller.poll(wait_ms):
                raise TimeoutError
            chunk = os.read(self.proc.stdout.fileno(), min(size - len(data), CHUNK))
            if not chunk:
                raise _ChildDied
            data += chunk
        return bytes(data)


_IDLE: dict[bytes, list[_Child]] = {}  # idle children of this process, by pickled oracle
_LOCK = threading.Lock()


def _checkout(key: bytes) -> _Child | None:
    """A live idle child serving ``key``, taken off the idle list; None when there is none.

    Idle children that died are reaped on the way: on Linux a child is killed when the
    *thread* that started it ends (``PR_SET_PDEATHSIG``), e.g. a worker thread of a pool.
    """
    with _LOCK:
        idle = _IDLE.get(key, [])
        while idle:
            child = idle.pop()
            if child.proc.poll() is None:
                return child
            child.kill()
    return None


def _checkin(key: bytes, child: _Child) -> None:
    """Put ``child``, which serves ``key`` and is idle again, on the idle list."""
    with _LOCK:
        _IDLE.setdefault(key, []).append(child)


def _forget_children() -> None:
    """In a forked process: drop the idle children copied from the parent, which still serve
    the parent (their pipes are shared), and renew the lock."""
    global _LOCK
    _IDLE.clear()
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_children)


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    """Write one frame (length header, then ``data``) to a blocking binary stream."""
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The bytes of the next frame of a blocking binary stream; None at its end."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    return stream.read(HEADER.unpack(header)[0])


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies; nothing on other systems."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _serve() -> None:
    """The child's main loop (see the module docstring): load the oracle of the first frame,
    then answer each Atoms frame with its LabelResult until stdin closes."""
    _die_with_parent()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what the oracle's libraries print goes to stderr, not into the replies
    requests = sys.stdin.buffer
    first = _read_frame(requests)
    if first is None:
        return
    try:
        oracle = pickle.loads(first)
    except Exception as exc:
        _write_frame(replies, pickle.dumps(describe_exception(exc)))
        return
    # one calculator now imports the oracle's libraries (tblite, pyscf, an ASE calculator's
    # module: oracles import them lazily) before any limit applies; a failure here is the
    # first label's to report
    with contextlib.suppress(Exception):
        oracle.calculator()
    _write_frame(replies, pickle.dumps(None))
    while (request := _read_frame(requests)) is not None:
        try:
            result = oracle.label(pickle.loads(request))
        except Exception as exc:  # a broken request, or an oracle that breaks its contract
            result = LabelResult.failed(describe_exception(exc))
        _write_frame(replies, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
