"""Captures still being written: standard input (``-r -``, a pipe from ``ibdump -w -``) or a file
that grows (``--follow``, as ``tail -f``), read as they come, never seeked.

:class:`LiveStream` is the binary stream the readers take (:class:`~madpipe.codecs.capture.CaptureReader`,
:class:`~madpipe.pipeline.ingest.reader.Ingest`): ``read(n)`` waits for ``n`` bytes (a record),
``readinto`` returns what has arrived (at least a byte), so a batch is what was there, and
``ready()`` says whether more is waiting, so a reader can hand on what it has. It ends at the end
of the pipe, or when :meth:`stop` is called (the CLI's SIGINT/SIGTERM handler): then the reader
sees the end of the capture and the command prints everything it knows.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from madpipe.codecs.errors import CaptureError

STDIN = "-"
#: How often a wait looks at the stop flag, and a followed file for growth (seconds).
POLL_SECONDS = 0.02


def is_stdin(path) -> bool:
    return isinstance(path, str) and path == STDIN


class LiveStream:
    """Standard input (``path`` "-") or a growing file (``follow``), read without seeking."""

    def __init__(self, path: str, follow: bool = False, idle_seconds: float | None = None):
        self.name = path
        self.idle_seconds = idle_seconds  # stop (as at an end) once nothing has come for this long
        self.last_data = time.monotonic()
        self.follow = follow and not is_stdin(path)
        self.stopped = threading.Event()
        self.interrupted = False  # stopped by a signal, not by the end of the input
        if is_stdin(path):
            self.fd, self._own = sys.stdin.buffer.fileno(), False
        else:
            try:
                self.fd, self._own = os.open(path, os.O_RDONLY), True
            except OSError as exc:
                raise CaptureError(f"{path}: cannot open: {exc.strerror or exc}") from None
        self.pipe = not self.follow

    def stop(self, interrupted: bool = True) -> None:
        self.interrupted = self.interrupted or interrupted
        self.stopped.set()

    def ready(self) -> bool:
        """Whether bytes are waiting to be read now (a reader may hand on what it has otherwise)."""
        if not self.pipe:
            try:
                return os.lseek(self.fd, 0, os.SEEK_CUR) < os.fstat(self.fd).st_size
            except OSError:
                return False
        return bool(select.select([self.fd], [], [], 0)[0])

    def readinto(self, b) -> int:
        """What has arrived, up to ``len(b)`` bytes (at least one); 0 at the end or once stopped."""
        view = memoryview(b).cast("B")
        while not self.stopped.is_set():
            if self.idle_seconds is not None and time.monotonic() - self.last_data > self.idle_seconds:
                self.stop(interrupted=False)
                break
            if self.pipe and not select.select([self.fd], [], [], POLL_SECONDS)[0]:
                continue
            got = os.readv(self.fd, [view])
            if got:
                self.last_data = time.monotonic()
            if got or self.pipe:
                return got
            time.sleep(POLL_SECONDS)  # a followed file that has not grown yet
        return 0

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes, fewer only at the end (or once stopped)."""
        if n < 0:
            n = 1 << 20
        buf = bytearray(n)
        have = 0
        while have < n:
            got = self.readinto(memoryview(buf)[have:])
            if not got:
                break
            have += got
        return bytes(buf[:have])

    def close(self) -> None:
        if self._own and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


@contextmanager
def stopped_by_signals(stream: LiveStream):
    """SIGINT and SIGTERM end the stream (the command then prints what it has and exits 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield stream
        return
    previous = {s: signal.signal(s, lambda *_: stream.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stream
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def seekable(path: str):
    """``path`` as a file the readers may read twice: standard input is copied to a temporary file
    first (diff and report read a capture more than once); any other path is itself."""
    if not is_stdin(path):
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="madpipe-stdin-", suffix=".pcap") as tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp, 1 << 20)
        tmp.flush()
        yield tmp.name


def line_buffered(out) -> None:
    """Make a text stream flush at each newline (stdout to a pipe is block-buffered otherwise)."""
    reconfigure = getattr(out, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
