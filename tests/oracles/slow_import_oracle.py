"""A test calculator whose module is slow to import, as a quantum-chemistry library is: the
child process of a TimeLimitedOracle must import it before the time limit applies.

It lives in its own module so that the child can import it, as
``make_oracle({"type": "ase", "calculator": "slow_import_oracle:SlowImportEMT"})``.
"""

import time

from ase.calculators.emt import EMT

IMPORT_SECONDS = 2.0
time.sleep(IMPORT_SECONDS)


class SlowImportEMT(EMT):
    """EMT, from a module that takes IMPORT_SECONDS to import."""
