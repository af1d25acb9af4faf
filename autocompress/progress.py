"""Progress of the long stages (teacher logits, importance, calibration, training, the search):
a tqdm bar on a terminal; where stderr is not one (a night's log file, a CI job) the same bar
written as plain lines, one as the stage starts, one every :data:`LOG_EVERY` seconds with its
rate and ETA, and one as it ends, so a log says where the time went (a stage shorter than
:data:`LOG_AFTER` writes nothing)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm as _tqdm

#: Seconds between two lines of a bar written to a log.
LOG_EVERY = 60.0
#: A bar in a log writes nothing for a stage shorter than this (seconds): a bad input's one-line
#: error stays the only line, and short stages do not fill the log.
LOG_AFTER = 10.0


class _Lines:
    """The text stream tqdm writes a bar to in a log: each refresh becomes one line (tqdm redraws
    in place with carriage returns, which a file keeps as one ever-growing line)."""

    def __init__(self, stream=None):
        self.stream = stream  # None: sys.stderr when written to (pickles: a Ray callback holds its bar)

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            (self.stream or sys.stderr).write(line + "\n")

    def flush(self) -> None:
        (self.stream or sys.stderr).flush()


def on_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(iterable=None, *, desc: str, total: int | float | None = None, enabled: bool = True,
                 leave: bool = False, stream=None, **options: Any):
    """A tqdm bar over ``iterable`` (or updated by hand): on a terminal as tqdm draws it (``leave``:
    keep it when done); in a log, lines every :data:`LOG_EVERY` seconds and the last state kept;
    ``enabled=False``: nothing."""
    from tqdm.auto import tqdm  # a notebook's widget where there is one

    if not enabled:
        return _tqdm(iterable, total=total, disable=True)
    if on_terminal(stream):
        return tqdm(iterable, desc=desc, total=total, leave=leave, file=stream or sys.stderr, **options)
    return LogBar(iterable, desc=desc, total=total, leave=True, file=_Lines(stream), mininterval=LOG_EVERY,
                  maxinterval=LOG_EVERY, delay=LOG_AFTER, dynamic_ncols=False, ncols=100, ascii=True, **options)


class LogBar(_tqdm):
    """tqdm whose postfix waits for the next line (tqdm redraws at once when it changes: a line per
    training step in a log). At module level: a bar held by a Ray callback is pickled by reference
    (a class made in a function is pickled by value, with tqdm's multiprocessing lock)."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=False)


__all__ = ["LOG_AFTER", "LOG_EVERY", "LogBar", "on_terminal", "progress_bar"]
