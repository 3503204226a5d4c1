"""Progress bars that a log file can hold.

On a terminal a bar redraws as usual. When stderr is not a terminal (a piped or redirected
``advsample run``), a bar prints at most one line every ``LOG_INTERVAL_S`` seconds plus its
final line, so a log of a whole run stays short.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0  # seconds between lines of a bar written to a file or pipe


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 disable: bool = False, leave: bool = False) -> tqdm:
    """A tqdm bar over ``iterable`` (or of ``total`` steps, updated by hand).

    Off a terminal it refreshes at most every ``LOG_INTERVAL_S`` seconds and keeps its last
    line (``leave`` is forced), so a log shows each long stage once with its duration.
    """
    if stderr_is_terminal():
        return tqdm(iterable, total=total, desc=desc, disable=disable, leave=leave)
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=True,
                mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ascii=True)
