"""Argument types and option groups that several commands share."""
from __future__ import annotations

import argparse

from madpipe.codecs.errors import MadpipeError


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
