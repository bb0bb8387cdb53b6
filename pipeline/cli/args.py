"""What several commands share: argument types, option groups, the capture files of a command line,
the report of a Parquet dataset written."""
from __future__ import annotations

import argparse
import sys

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.columns import many


def integer(text: str) -> int:
    """An integer in any base Python reads (0x10, 16, 0o20), for argparse's ``type=``."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def add_capture_inputs(p: argparse.ArgumentParser) -> None:
    """-r FILE, repeatable, or a directory: the captures a command reads (see madpipe.pipeline.columns.many)."""
    p.add_argument("-r", dest="read", metavar="FILE", action="append", required=True,
                   help="capture to read; repeat it, or name a directory (its *.pcap, *.pcapng, *.cap)")


def add_host_options(p: argparse.ArgumentParser, host_help: str, map_help: str) -> None:
    """--host LID --vfs N -P PORT --pkey-map FILE: an mlx4 SR-IOV host's view of one port."""
    p.add_argument("--host", metavar="LID", type=integer, help=host_help)
    p.add_argument("--vfs", metavar="N", type=integer, default=0, help="number of VFs on the host (1..79)")
    p.add_argument("-P", dest="port_num", metavar="PORT", type=integer, default=1,
                   help="the host's physical port number, 1 or 2 (default 1)")
    p.add_argument("--pkey-map", metavar="FILE", help=map_help)


def check_host_options(args) -> None:
    """One-line errors for host options that do not fit together."""
    if args.host is None and (args.vfs or args.pkey_map):
        raise MadpipeError("--vfs and --pkey-map describe a host: give --host LID too")
    if args.host is not None and not 1 <= args.vfs <= 79:
        raise MadpipeError(f"--vfs must be 1..79 with --host, got {args.vfs}")
    if args.port_num not in (1, 2):
        raise MadpipeError(f"-P must be 1 or 2, got {args.port_num}")


def write_dataset_cli(command: str, files: list[str], out: str, kind: str, **kw) -> int:
    """many.write_dataset with a line per capture and a total on stderr; exit 2 if a capture could
    not be read, 1 if one was cut short, else 0."""
    progress = many.Progress.for_cli(command, len(files), uses_stdout=False)
    try:
        results = many.write_dataset(files, out, kind, progress=progress, **kw)
    finally:
        progress.close()
    what = "frames" if kind == "frames" else "P_Key table rows"
    status = 0
    for r in results:
        if r.get("unreadable"):
            print(f"madpipe {command}: {r['file_error']}", file=sys.stderr)
            status = 2
        else:
            print(f"{r['capture']}: {r['rows']} {what}", file=sys.stderr)
            if r["file_error"]:
                print(f"madpipe {command}: {r['capture']}: {r['file_error']}", file=sys.stderr)
                status = max(status, 1)
    print(f"{len(results)} captures, {sum(r['rows'] for r in results)} {what} written to {out} "
          "(Parquet dataset partitioned by capture)", file=sys.stderr)
    return status


class _Quiet(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def captures_named(register_command, command: str, argv: list[str], dests: tuple[str, ...]) -> list[str]:
    """The capture files a command line names in its positional arguments ``dests``, found with
    the command's own parser before the CLI parses (and before any kernel module is imported),
    so that ``jit.plan_for_inputs`` can size them. An unparsable line names none."""
    if "-h" in argv or "--help" in argv:
        return []
    parser = _Quiet(add_help=False)
    register_command(parser.add_subparsers())
    try:
        args, _ = parser.parse_known_args([command, *argv])
    except ValueError:
        return []
    return [getattr(args, d) for d in dests]
