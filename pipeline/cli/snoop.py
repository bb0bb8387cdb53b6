"""`madpipe snoop`: every port's P_Key table as the SM left it, the changes in time order, findings."""
from __future__ import annotations

import argparse
import sys

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.cli.args import (
    PROFILE_EPILOG,
    add_capture_inputs,
    add_force,
    add_host_options,
    add_profile,
    check_host_options,
    table_output,
    write_dataset_cli,
)
from madpipe.pipeline.cli.live import add_live_options, live_input, live_status, open_live
from madpipe.pipeline.columns import many
from madpipe.pipeline.fabric import snoop  # snoop.snoop_capture looked up at each call: tests swap it there
from madpipe.pipeline.fabric.model import FROM_RULES
from madpipe.pipeline.fabric.output import print_json, print_text, snoop_output
from madpipe.pipeline.mlx4.pkey_map import read_pkey_map

EXAMPLE = """rules (--from):
  set      the kernel's rule (smp_snoop): a SubnSet(P_KeyTable) is applied when the GetResp with
           its TID, from that port, has status 0; with no answer in the capture it is applied and
           counted as unconfirmed; with an error status it is not applied.
  getresp  every SubnGetResp(P_KeyTable) with status 0 sets the table the port reported.

live (-r - for standard input, --follow for a file still being written): each change event is
printed (and flushed) as soon as the frame that decides it is read: under --from set, the
GetResp that answers the Set (or a second of capture time with none: unconfirmed); the port
tables, findings and counts come at the end of the input, or when SIGINT (Ctrl-C) or SIGTERM
stops the run, which then exits 0. --follow reads on at the end of the file until stopped, or
until --stop-after SECONDS pass with nothing new.

host view (--host LID --vfs N): the port at that LID as an mlx4 SR-IOV master's port -P: its
virt2phys_pkey (init_pkeys, then --pkey-map), the P_Key-change events of the master and of each
VF, and each VF's virtual P_Key table. A --pkey-map file has one line per mapping,
'VF PORT INDEX PHYS_INDEX' (what echo PHYS > iov/<vf>/ports/<port>/pkey_idx/<index> does).

""" + PROFILE_EPILOG + """

examples:
  madpipe snoop -r pcaps/opensm_partitions.pcap
  madpipe snoop -r pcaps/opensm_partitions.pcap --all      # every entry, 8 a line, not only P_Keys
  madpipe snoop -r capture.pcap --from getresp -T json | jq 'select(.type=="event")'
  madpipe snoop -r capture.pcap --host 0x4 --vfs 2 --pkey-map vfs.map
  madpipe snoop -r capture.pcap --host 0x4 --vfs 100 --profile mainline   # VFs past 79: mainline only
  madpipe snoop -r monday/ -r today.pcap -j 2             # a heading and a result per capture
  madpipe snoop -r capture.pcap -w ports.csv                     # the tables as rows; or .parquet
  cat pcaps/opensm_partitions.pcap | madpipe snoop -r -         # a pipe (ibdump -w - | madpipe snoop -r -)
  madpipe snoop -r capture.pcap --follow --stop-after 1          # a file still being written (tail -f)
  madpipe snoop -r captures/ -w ports/ --dask local"""


def register(sub) -> None:
    p = sub.add_parser(
        "snoop",
        description="Run the mlx4 smp_snoop model over a capture: each target port (by LID, by "
        "directed-route path, plus the switch port from attr_mod) keeps its own phys_pkey_cache. "
        "Prints each port's final P_Key table (smpquery pkeys layout), the change events in time "
        "order, findings (blocks past the kernel's table) and counts.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_capture_inputs(p)
    add_live_options(p)
    p.add_argument("--from", dest="rule", choices=FROM_RULES, default="set",
                   help="which MADs set a table (default set: the kernel's rule)")
    p.add_argument("-T", dest="format", choices=("text", "json", "csv", "parquet"),
                   help="output format (default text; json = JSON Lines with a 'type' key; csv and parquet "
                   "are what -w writes, which its name says already)")
    p.add_argument("-w", dest="write", metavar="OUT",
                   help="write the P_Key table rows (port_tables_dataframe): OUT.parquet, OUT.csv, or DIR/ "
                   "for a Parquet dataset partitioned by capture (several captures, --dask)")
    add_force(p)
    p.add_argument("--all", dest="all_entries", action="store_true",
                   help="print every entry of each table (smpquery pkeys' full layout), not only the lines "
                   "holding a P_Key")
    p.add_argument("-j", dest="jobs", metavar="N", type=int,
                   help="processes for several captures (default: the CPUs; 1 = this process)")
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="write the -w dataset of P_Key tables on dask.distributed: a scheduler address, "
                   "or 'local' for a LocalCluster of -j workers (pip install 'madpipe[dask]')")
    add_profile(p)
    add_host_options(p, "mlx4 host view of the port at this LID",
                     "VF P_Key index mappings for the host view")
    p.set_defaults(func=run)


def run(args) -> int:
    check_host_options(args)
    files = many.capture_files(args.read)
    kind = table_output(args, files)
    if kind:
        return _run_tables(args, files, kind)
    args.format = args.format or "text"
    if live_input(args, files):
        if args.host is not None:
            raise MadpipeError("--host needs the whole capture: not with -r - or --follow")
        return _run_live(args, files[0])
    v2p = None
    if args.pkey_map:
        v2p = read_pkey_map(args.pkey_map, num_vfs=args.vfs, profile=args.profile)
    options = {"rule": args.rule, "profile": args.profile, "host": args.host, "num_vfs": args.vfs,
               "port_num": args.port_num, "v2p": v2p}
    if len(files) == 1:
        result = snoop.snoop_capture(files[0], **options)
        out = sys.stdout
        if args.format == "json":
            print_json(result, out)
        else:
            print_text(result, out, args.all_entries)
        out.flush()
        if result.file_error:
            print(f"madpipe snoop: {files[0]}: {result.file_error}", file=sys.stderr)
            return 1
        return 0
    # Several captures: snoop_output over the cores, each printed in the order of the files.
    progress = many.Progress.for_cli("snoop", len(files))
    items = [(path, options, args.format, args.all_entries) for path in files]
    status = 0
    try:
        for path, (text, error, code) in zip(files, many.run_each(snoop_output, items, files, args.jobs, progress)):
            progress.clear()
            if args.format == "text":
                sys.stdout.write(f"==> {path} <==\n")
                sys.stdout.write(text)
            else:
                many.CaptureTag(sys.stdout, path).write(text)  # "capture" first in every record
            sys.stdout.flush()
            if error:
                progress.note(f"madpipe snoop: {error}")
            status = max(status, code)
    finally:
        progress.close()
    return status


def _run_live(args, path: str) -> int:
    """-r - or --follow: events as they are found, then the tables (see the help's "live")."""
    from dataclasses import replace

    from madpipe.pipeline.decode.output import jsonl
    from madpipe.pipeline.fabric.live.output import event_header, event_record, event_text
    from madpipe.pipeline.fabric.live.snoop import snoop_stream

    out = sys.stdout
    seen = []

    def show(events, t0_ns: int, titles) -> None:
        if args.format == "json":
            for e in events:
                jsonl(event_record(e), out)
        else:
            if not seen:
                out.write(event_header())
            out.write("".join(event_text(e, t0_ns, title=titles.get(e.port)) for e in events))
        seen.append(len(events))
        out.flush()

    with open_live(path, args) as stream:
        result = snoop_stream(stream, show, args.rule)
    rest = replace(result, events=[])  # printed already
    if args.format == "json":
        print_json(rest, out)
    else:
        if seen:
            out.write("\n")
        print_text(rest, out, args.all_entries)
    out.flush()
    return live_status("snoop", path, result.file_error, stream)


def _run_tables(args, files: list[str], kind: str) -> int:
    """-w OUT.parquet|OUT.csv: port_tables_dataframe rows; -w DIR/ (several captures, --dask): a dataset."""
    if args.host is not None:
        raise MadpipeError("--host describes the mlx4 host view, which -w does not write: drop it")
    if kind != "dataset":
        from madpipe.pipeline.columns.frames import port_tables_dataframe

        df = port_tables_dataframe(files[0], args.rule)
        try:
            if kind == "csv":
                df.to_csv(args.write, index=False)
            else:
                df.to_parquet(args.write, index=False)
        except OSError as exc:
            raise MadpipeError(f"{args.write}: cannot write: {exc}") from None
        print(f"{files[0]}: {df.port_label.nunique()} ports, {len(df)} P_Key table rows written to {args.write} "
              f"({kind})", file=sys.stderr)
        if df.attrs["file_error"]:
            print(f"madpipe snoop: {files[0]}: {df.attrs['file_error']}", file=sys.stderr)
            return 1
        return 0
    return write_dataset_cli("snoop", files, args.write, "ports", rule=args.rule, jobs=args.jobs, dask=args.dask,
                             force=args.force)
