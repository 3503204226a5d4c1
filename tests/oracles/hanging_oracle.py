"""A test calculator for the oracle time limit: EMT that hangs or kills its process on demand.

It lives in its own module so that the child process of a TimeLimitedOracle can import it, as
``make_oracle({"type": "ase", "calculator": "hanging_oracle:MisbehavingEMT"})``.
"""

import os
import time

from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT


class MisbehavingEMT(EMT):
    """EMT, except that ``atoms.info["sleep"]`` makes it sleep that many seconds first,
    ``atoms.info["exit"]`` makes it end its process at once with that exit code, and
    ``atoms.info["print"]`` writes that text to file descriptor 1, as C libraries print."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Misbehave as ``atoms.info`` asks, then compute EMT."""
        if "exit" in atoms.info:
            os._exit(atoms.info["exit"])
        os.write(1, atoms.info.get("print", "").encode())
        time.sleep(atoms.info.get("sleep", 0))
        super().calculate(atoms, properties, system_changes)
