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
