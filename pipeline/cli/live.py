"""What the commands that read live input share: ``-r -`` (standard input) and ``--follow`` (a file
still being written), their stream, signals and flushing (:mod:`madpipe.pipeline.ingest.live`)."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.ingest.live import LiveStream, is_stdin, line_buffered, stopped_by_signals


def add_live_options(p) -> None:
    p.add_argument("--follow", action="store_true",
                   help="read on at the end of the file as it grows (tail -f), until SIGINT/SIGTERM")
    p.add_argument("--stop-after", metavar="SECONDS", type=float,
                   help="with -r - or --follow: stop once nothing new has come for SECONDS")


def live_input(args, files: list[str]) -> bool:
    """Whether the command reads live input (``-r -`` or ``--follow``); one-line errors for what
    does not go with it."""
    live = args.follow or any(map(is_stdin, files))
    if live and len(files) != 1:
        raise MadpipeError("-r - and --follow read one capture: give one -r")
    if args.follow and is_stdin(files[0]):
        raise MadpipeError("--follow follows a file; -r - reads standard input to its end already")
    if args.stop_after is not None and (not live or args.stop_after <= 0):
        raise MadpipeError("--stop-after takes a positive number of seconds, with -r - or --follow")
    return live


@contextmanager
def open_live(path: str, args):
    """The stream of a live input, stopped by SIGINT/SIGTERM, with stdout flushed at each line."""
    stream = LiveStream(path, follow=args.follow, idle_seconds=args.stop_after)
    line_buffered(sys.stdout)
    try:
        with stopped_by_signals(stream):
            yield stream
    finally:
        stream.close()


def live_status(command: str, path: str, error: str | None, stream: LiveStream) -> int:
    """Exit status of a live run: 0 when it ended or was stopped (a record cut by the stop is no
    error), 1 when the input was corrupt or ended inside a record."""
    if stream.interrupted:
        print(f"madpipe {command}: stopped; printed what {path} held until then", file=sys.stderr)
        return 0
    if error:
        print(f"madpipe {command}: {path}: {error}", file=sys.stderr)
        return 1
    return 0
