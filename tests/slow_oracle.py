"""A test oracle: EMT that sleeps and logs every geometry it is asked to label."""

import hashlib
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
