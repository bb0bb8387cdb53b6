"""`madpipe build-kernels`: compile the kernels ahead of time now, rather than in the first large job."""
from __future__ import annotations

import argparse

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.kernels import aot

EXAMPLE = """The extension is built for these kernel sources and this CPU into the cache folder
($MADPIPE_CACHE_DIR, default ~/.cache/madpipe), in a subprocess that needs numba and a C compiler
(20-25 s here), and loaded once to check it. Its path is printed. Without this step the first large
job builds it; without a C compiler the kernels run under numba's JIT (the reason is kept in
build-failed.txt there; this command tries again).

examples:
  madpipe build-kernels                 # in an image, after pip install: no job ever waits for it
  madpipe build-kernels --force         # build again (same sources and CPU: the same file)
  MADPIPE_CACHE_DIR=/opt/madpipe/cache madpipe build-kernels"""


def register(sub) -> None:
    p = sub.add_parser(
        "build-kernels",
        description="Build the ahead-of-time kernels (numba.pycc, for this machine's CPU) unless "
        "they are built for the current sources, and print the extension's path.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--force", action="store_true", help="build again even if the extension exists")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        print(aot.build_by_hand(force=args.force))
    except RuntimeError as exc:
        raise MadpipeError(str(exc)) from None
    return 0
