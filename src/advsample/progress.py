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


class _LogBar(tqdm):
    """A tqdm bar for logs: each refresh is a whole line ending in a newline (not the empty
    0 % line, not the same line twice), and postfix updates wait for the next timed refresh
    instead of forcing one."""

    _last = ""

    def display(self, msg=None, pos=None):
        """Write the bar as one whole line (skipping empty and repeated lines)."""
        text = (self.__str__() if msg is None else msg).strip()
        if text and text != self._last and (self.n or msg is not None):
            self.fp.write(text + "\n")
            self.fp.flush()
            self._last = text
        return True

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        """Update the postfix without forcing a line (the next timed refresh shows it)."""
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 disable: bool = False, leave: bool = False) -> tqdm:
    """A tqdm bar over ``iterable`` (or of ``total`` steps, updated by hand).

    Off a terminal it writes a line at most every ``LOG_INTERVAL_S`` seconds and its final
    line (``leave`` is forced), so a log shows each long stage with its duration.
    """
    if stderr_is_terminal():
        return tqdm(iterable, total=total, desc=desc, disable=disable, leave=leave)
    return _LogBar(iterable, total=total, desc=desc, disable=disable, leave=True,
                   mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ascii=True)
