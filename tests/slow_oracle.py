"""A test oracle: EMT that sleeps and logs every geometry it is asked to label."""

import hashlib
import os
import time

from ase.calculators.emt import EMT


class SlowLoggingEMT(EMT):
    def __init__(self, log: str, delay: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.log, self.delay = log, delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or ["positions"])
        key = hashlib.sha1(atoms.positions.round(8).tobytes()).hexdigest()
        with open(self.log, "a") as fh:
            fh.write(key + "\n")
        time.sleep(self.delay)


class FlakyEMT(EMT):
    """EMT that fails on every structure whose first coordinate's 4th decimal is odd."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if int(abs(atoms.positions[0, 0]) * 1e4) % 2:
            raise RuntimeError("SCF did not converge (simulated)")
        super().calculate(atoms, properties, system_changes or ["positions"])


class LoggingEMT(EMT):
    """EMT that appends the hash of every geometry it computes to ``log``; with ``fail_after``
    it raises (like a kill, before computing) once ``log`` holds that many calls."""

    def __init__(self, log: str, fail_after: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.log, self.fail_after = log, fail_after

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if self.fail_after is not None and os.path.exists(self.log):
            with open(self.log) as fh:
                if len(fh.read().split()) >= self.fail_after:
                    raise KeyboardInterrupt("simulated kill")
        super().calculate(atoms, properties, system_changes or ["positions"])
        key = hashlib.sha1(atoms.positions.tobytes()).hexdigest()
        with open(self.log, "a") as fh:
            fh.write(key + "\n")


def fault_of(positions) -> str:
    """The fault FaultyEMT injects for a geometry: "fail" (20 %), "hang" (5 %), "nan" (5 %)
    or "none", a fixed function of the positions' bytes."""
    r = int(hashlib.sha1(positions.tobytes()).hexdigest(), 16) % 100
    return "fail" if r < 20 else "hang" if r < 25 else "nan" if r < 30 else "none"


class FaultyEMT(EMT):
    """EMT with injected faults (see ``fault_of``) once ``log`` holds ``clean_calls`` calls
    (before that, e.g. during a relaxation, it behaves). Every call appends "start <key>" to
    ``log`` before it computes and "end <key>" once it has a result or raises."""

    def __init__(self, log: str, clean_calls: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.log, self.clean_calls = log, clean_calls

    def _write(self, text: str) -> int:
        with open(self.log, "a+") as fh:
            fh.write(text + "\n")
            fh.seek(0)
            return fh.read().count("start ")

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        key = hashlib.sha1(atoms.positions.tobytes()).hexdigest()
        calls = self._write(f"start {key}")
        fault = fault_of(atoms.positions) if calls > self.clean_calls else "none"
        try:
            if fault == "fail":
                raise RuntimeError("simulated SCF failure")
            if fault == "hang":
                time.sleep(3600)
            super().calculate(atoms, properties, system_changes or ["positions"])
            if fault == "nan":
                self.results["energy"] = float("nan")
        finally:
            self._write(f"end {key}")
