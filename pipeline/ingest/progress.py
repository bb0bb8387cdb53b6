"""A progress line for long work on one capture: ``madpipe snoop: big.pcap 45% of 3.2 GB, 1.2 s``.

The CLI turns it on (:func:`activate`) when stderr is a terminal and stdout is not (the results
are going to a file or a pipe); the batch ingest reports how far into the file it has read
(:func:`update`). Everywhere else every call is a no-op, so library users see nothing.
"""
from __future__ import annotations

import os
import sys
import time

_active: "ByteProgress | None" = None


class ByteProgress:
    def __init__(self, command: str, stream, interval: float = 0.2):
        self.command = command
        self.stream = stream
        self.interval = interval
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = 0

    def update(self, path: str, done: int, total: int) -> None:
        if done >= total:  # the whole file is read: what the command prints next starts clean
            self.clear()
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        pct = 100 * done // total if total else 100
        line = (f"madpipe {self.command}: {os.path.basename(path)} {pct}% of {_size(total)}, "
                f"{now - self.start:.1f} s")
        self.stream.write("\r" + line + " " * max(self.shown - len(line), 0))
        self.stream.flush()
        self.shown = len(line)

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0


def _size(n: int) -> str:
    for div, unit in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def activate(command: str, stream=None, stdout=None) -> bool:
    """Show progress for this process when ``stream`` (stderr) is a terminal and stdout is not."""
    global _active
    stream = sys.stderr if stream is None else stream
    stdout = sys.stdout if stdout is None else stdout
    _active = ByteProgress(command, stream) if _isatty(stream) and not _isatty(stdout) else None
    return _active is not None


def update(path: str, done: int, total: int) -> None:
    if _active is not None:
        _active.update(path, done, total)


def finish() -> None:
    """Clear the line (before the command's own last words) and stop showing progress."""
    global _active
    if _active is not None:
        _active.clear()
    _active = None
