"""The ``madpipe`` command line: ``main(argv=None) -> int``.

Each command lives in its own module ``madpipe.pipeline.cli.<name>`` exposing
``register(subparsers)``, which adds its parser and sets ``func(args) -> int`` as default.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.columns import many
from madpipe.pipeline.ingest import progress
from madpipe.pipeline.kernels import jit

# Every command, in the order `madpipe --help` lists them, with its line there. Kept here, not in
# the command modules, so that `madpipe --help` imports none of them (they import the library:
# numpy, construct, scapy), and a command line naming one imports that one alone.
COMMANDS = {
    "decode": "decode every frame of a capture (pcap/pcapng, link type 197 ERF or 247)",
    "craft": "write crafted SMPs (or frames from decode's JSON) to a capture tshark opens",
    "snoop": "P_Key tables of every port from a capture, as the mlx4 master's smp_snoop sees them",
    "diff": "compare the P_Key tables two captures leave on every port (and the VFs' view)",
    "check": "check the P_Key tables of captures against opensm's partitions.conf, port by port",
    "report": "a self-contained HTML report with figures: membership matrix, change events, MADs over time",
    "paravirt": "rewrite a trace of QP-modify commands as the mlx4 SR-IOV master does",
    "capture": "capture opensm programming a simulated fabric (ibsim) as native IB packets",
    "replay": "send a capture's MADs into a fabric (ibsim or a umad device), record the answers",
    "fuzz": "fuzz MAD parsers and the mlx4 kernel model with structure-aware mutations",
    "bench": "throughput of snoop, paravirt, capture decode and start-up, as ratios to baselines",
    "build-kernels": "compile the numba kernels ahead of time into the cache (unless built) and print the path",
}

EPILOG = """examples:
  madpipe decode -r pcaps/infiniband_endace_erf_2008.pcap          # every frame, one line each
  madpipe decode -r capture.pcap -Y 'mad.attr_id==0x16' -T json    # P_KeyTable MADs as JSON Lines
  madpipe snoop -r pcaps/opensm_partitions_changed.pcap            # P_Key tables and changes
  madpipe diff monday.pcap today.pcap                               # what changed between captures
  madpipe check --partitions pcaps/partitions-a.conf pcaps/opensm_partitions.pcap   # tables vs policy
  madpipe paravirt -r trace.jsonl -w rewritten.jsonl                # mlx4 QP-context rewriting
  madpipe craft --method set --attr pkey-table --block 0 --pkeys 0xffff,0x8001 -L 4 -w set.pcap
  madpipe fuzz --seed 1 --count 100000 -w findings.pcap
  madpipe build-kernels                                             # compile the kernels now, once

environment:
  MADPIPE_JIT=aot|1|0  how kernels run: compiled ahead of time (the default for large inputs;
                       built once into the cache, 20-25 s, by 'madpipe build-kernels' or the
                       first large job) | numba's JIT | plain Python. Nothing compiles at import
  MADPIPE_CACHE_DIR    where the ahead-of-time kernels are kept (default ~/.cache/madpipe;
                       built for this machine's CPU, named by it)
  OPENBLAS_NUM_THREADS 1 unless set: madpipe does no linear algebra, and numpy's BLAS threads
                       would spin on the cores the snoop's reader thread uses

Run 'madpipe COMMAND --help' for a command's flags and an example."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` that command with its flags (its module alone
    is imported). Without ``only`` the commands are listed but their modules not imported: that
    parser answers ``--help``, ``--version`` and an unknown command without loading the library;
    :func:`command_parser` gives a command's own."""
    return _build(only)[0]


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of command ``name`` (what ``madpipe NAME --help`` prints)."""
    return _build(name)[1].made[name]


def _build(only: str | None) -> tuple[argparse.ArgumentParser, _Named]:
    parser = argparse.ArgumentParser(
        prog="madpipe",
        description="InfiniBand management traffic toolkit: decode captures, snoop P_Key tables, "
        "model mlx4 SR-IOV paravirtualization.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    named = _Named(sub)
    for name, line in COMMANDS.items():
        if name == only:
            importlib.import_module(f"madpipe.pipeline.cli.{name.replace('-', '_')}").register(named)
        else:
            sub.add_parser(name, help=line, add_help=False)  # listed; its flags need its module
    return parser, named


class _Named:
    """The subparsers action as a command module sees it: the command's line in ``madpipe
    --help`` comes from :data:`COMMANDS`, and the parsers made are kept by name."""

    def __init__(self, sub):
        self.sub = sub
        self.made: dict[str, argparse.ArgumentParser] = {}

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        self.made[name] = self.sub.add_parser(name, help=COMMANDS[name], **kwargs)
        return self.made[name]


class _VersionAction(argparse.Action):
    """--version, looked up only when asked (importlib.metadata costs every run 10 ms)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def _version() -> str:
    try:
        from importlib.metadata import version

        return "madpipe " + version("madpipe")
    except Exception:  # not installed: running from a checkout
        return "madpipe (uninstalled)"


# Commands whose captures are positional arguments: their module's input_files(argv) finds them
# with the command's own parser, without importing any kernel module.
POSITIONAL_INPUTS = ("diff", "report", "check")
# Inputs that never build the ahead-of-time kernels or load numba (they use the kernels built
# ahead of time if they exist, else plain Python). Plain Python beats loading numba (~0.7 s), measured: snoop's
# streaming kernels touch a few bytes a frame (3,000 frames: 0.73 s as Python, 1.15 s with
# numba); decode's CRC check reads every byte (1,000 frames already take as long as numba's load).
SMALL_INPUT_BYTES = {"snoop": 1 << 20}
# Commands that read whole captures: a progress line while they read, on a terminal.
BYTE_PROGRESS = ("decode", "snoop", "diff", "report")


def _input_files(argv: list[str]) -> list[str]:
    """The capture files of a command line, found before argparse runs (it imports the kernels)."""
    if argv and argv[0] in POSITIONAL_INPUTS:
        return importlib.import_module(f"madpipe.pipeline.cli.{argv[0]}").input_files(argv[1:])
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-r", "--read") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("-r") and len(arg) > 2 and not arg.startswith("--"):
            files.append(arg[2:])
    try:
        return many.capture_files(files)  # a directory counts as its captures
    except MadpipeError:
        return files  # the command will say what is wrong


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    files = _input_files(argv)
    if files:
        # A small capture is done before numba could even load: never compile for it.
        jit.plan_for_inputs(files, SMALL_INPUT_BYTES.get(argv[0], jit.SMALL_INPUT_BYTES))
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command in BYTE_PROGRESS and (len(files) == 1 or args.command in ("diff", "report")):
        # (several captures at once get a line per capture instead)
        if progress.activate(args.command) and files:
            jit.resolve()  # a first large job's build says so on its own line, before the progress
    try:
        try:
            return int(args.func(args) or 0)
        finally:
            progress.finish()  # before any last line below, so it does not land on the bar
    except MadpipeError as exc:
        print(f"madpipe {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `madpipe decode ... | head`: the reader went away, which is not an error.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"madpipe {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # A file the command could not create or read (missing folder, no permission, disk
        # full): the system's words and the path, on one line.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"madpipe {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


# Commands that leave nothing for exit-time handlers (unlike capture and replay, whose atexit
# handler stops leftover simulator processes): their process ends without the interpreter's
# teardown of every module, ~40 ms of a snoop that takes 0.5 s.
FAST_EXIT = ("decode", "snoop", "diff", "report", "check")


# numpy's OpenBLAS (pthreads in the wheels) starts a thread per core when numpy is imported, and
# on a 2-core machine they spin through a snoop's first tenth of a second on the core its
# read-ahead thread needs (a 1M-frame snoop took 10% longer). madpipe does no linear algebra:
# one BLAS thread, unless the user sets another number.
SINGLE_THREADED_BLAS = {"OPENBLAS_NUM_THREADS": "1"}


def small_pages() -> None:
    """numpy's arrays in 4 KiB pages, not huge pages past 4 MiB (numpy's default on Linux): on a
    VM whose balloon reports free 2 MiB blocks to its host, the first write to a huge page waits
    for the host to map all 2 MiB again (see kernels.populate.small_pages). `madpipe snoop -T
    json` of 1M changing Sets, each run after 3.5 s idle: 0.82-0.83 s, was 0.98 s (medians of
    five alternating runs); run back to back, 0.99x; a snoop of 1M SM frames the same. numpy's
    switch is private: where it is missing, nothing changes."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    switch = getattr(multiarray, "_set_madvise_hugepage", None)
    if switch is not None:
        switch(False)


def entry() -> None:
    """The ``madpipe`` console script: :func:`main`, then exit with its status."""
    for name, value in SINGLE_THREADED_BLAS.items():
        os.environ.setdefault(name, value)  # before anything imports numpy
    argv = sys.argv[1:]
    if argv and argv[0] in FAST_EXIT:  # the commands that read captures, which import numpy anyway
        small_pages()
    code = main(argv)
    if argv and argv[0] in FAST_EXIT:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader gone (| head) or a stream main closed
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
