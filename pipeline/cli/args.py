"""What several commands share: argument types, option groups, the capture files of a command line,
-w's one rule (the format from the name, --force to overwrite), the report of a dataset written."""
from __future__ import annotations

import argparse
import os
import sys

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.columns import many
from madpipe.pipeline.mlx4 import profiles


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


#: --profile's help: the profiles and what differs (profiles.table()).
PROFILE_EPILOG = ("profiles (--profile; \"new\" = mainline; the kernel lines: madpipe.pipeline.mlx4.profiles):\n"
                  + profiles.table())


def add_profile(p) -> None:
    """--profile NAME: the mlx4 kernel whose sizes and rules the model follows."""
    p.add_argument("--profile", choices=tuple(profiles.PROFILES), default="mainline",
                   help="kernel profile: 3.7 (the seed commit, 80 functions) or mainline (today's "
                   "tree, 128 functions; 'new' is its alias; default); the table below says what differs")


def add_host_options(p: argparse.ArgumentParser, host_help: str, map_help: str) -> None:
    """--host LID --vfs N -P PORT --pkey-map FILE: an mlx4 SR-IOV host's view of one port."""
    p.add_argument("--host", metavar="LID", type=integer, help=host_help)
    p.add_argument("--vfs", metavar="N", type=integer, default=0,
                   help="number of VFs on the host (1..126 on mainline, 1..64 at 3.7: MLX4_MAX_NUM_VF)")
    p.add_argument("-P", dest="port_num", metavar="PORT", type=integer, default=1,
                   help="the host's physical port number, 1 or 2 (default 1)")
    p.add_argument("--pkey-map", metavar="FILE", help=map_help)


def check_host_options(args) -> None:
    """One-line errors for host options that do not fit together."""
    if args.host is None and (args.vfs or args.pkey_map):
        raise MadpipeError("--vfs and --pkey-map describe a host: give --host LID too")
    top = profiles.resolve(getattr(args, "profile", "mainline")).max_num_vf
    if args.host is not None and not 1 <= args.vfs <= top:
        raise MadpipeError(f"--vfs must be 1..{top} with --host (MLX4_MAX_NUM_VF of profile "
                           f"{getattr(args, 'profile', 'mainline')}), got {args.vfs}")
    if args.port_num not in (1, 2):
        raise MadpipeError(f"-P must be 1 or 2, got {args.port_num}")


def add_force(p) -> None:
    """--force, on a parser or an argument group."""
    p.add_argument("--force", action="store_true", help="overwrite what -w names if it exists")


def check_new_output(path: str | None, force: bool) -> None:
    """-w's rule for a file: one that exists is overwritten only with --force."""
    if path and path != "-" and os.path.exists(path) and not force:
        raise MadpipeError(f"{path}: exists: --force to overwrite it")


#: Table files by the end of their name; a name ending in "/" (or an existing folder) is a
#: Parquet dataset partitioned by capture.
TABLE_SUFFIXES = {".parquet": "parquet", ".csv": "csv"}


def table_output(args, files: list[str]) -> str | None:
    """What ``-w`` writes for ``decode`` and ``snoop``: "parquet", "csv", "dataset" (a Parquet
    folder), or None when the command prints. The format comes from the name (``-T`` may say it
    too, and must agree); several captures and ``--dask`` write a dataset; an existing file is
    overwritten only with ``--force``."""
    fmt, out = args.format, args.write
    tables = ("csv", "parquet")
    if out is None:
        if args.dask:
            raise MadpipeError("--dask writes a Parquet dataset: give -w DIR/")
        if fmt in tables:
            raise MadpipeError(f"-T {fmt} writes a file: give -w OUT.{fmt}")
        return None
    if fmt in ("text", "json"):
        raise MadpipeError(f"-T {fmt} prints to stdout (redirect it: > FILE); -w writes tables: OUT.parquet, "
                           "OUT.csv or a dataset folder DIR/")
    several = len(files) > 1 or bool(args.dask)
    suffix = TABLE_SUFFIXES.get(os.path.splitext(out.rstrip("/"))[1].lower())
    if out.endswith("/") or os.path.isdir(out) or (several and suffix is None):
        kind = "dataset"
    elif suffix or fmt:
        kind = suffix or fmt
    else:
        raise MadpipeError(f"-w {out}: end the name in .parquet or .csv, or in / for a dataset folder "
                           "(or give -T csv|parquet)")
    if fmt and fmt != {"dataset": "parquet"}.get(kind, kind):
        raise MadpipeError(f"-T {fmt}, but -w {out} names a "
                           f"{'Parquet dataset folder' if kind == 'dataset' else kind + ' file'}")
    if kind != "dataset" and several:
        why = "--dask" if args.dask else "several captures"
        raise MadpipeError(f"{why} write a dataset folder: -w DIR/, not the {kind} file {out}")
    if kind != "dataset":
        check_new_output(out, args.force)
    return kind


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
