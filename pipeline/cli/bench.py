"""`madpipe bench`: measure every stage against a baseline measured in the same run."""
from __future__ import annotations

import argparse
import sys

from madpipe.codecs.errors import MadpipeError

EXAMPLE = """Each figure is the median of --repeat runs (min-max shown) and its ratio to the baseline of
its group, measured in the same run: with --repeat 2 or more, each run follows a run of its
baseline and the ratio is the median of these pairs, so load that comes and goes meets both
alike. Baselines: a memory-touch kernel over the cache lines the snoop reads (snoop), a memory
copy of the mailboxes (paravirt), reading the capture file (capture), a small run with plain-Python kernels
(startup); the api group times the public Python calls (smp_snoop, paravirt.rewrite with and
without out=, snoop's event writers into a pipe) against the same kinds of baselines, on SM
traffic and on SubnSets that each change their block. Slow ways (reference, construct, scapy, decode, tshark) run on --subset items.
Last, the throughput targets checked on the run's figures (met / NOT MET): the snoop kernel at
half the memory-touch rate and 50x the reference, paravirt in place at half a memory copy, the
snoop end to end within 3x of ingest and 10x tshark's plain decode (in this process, and as a
process with its start-up), decode -T json 3x tshark -T json, a small job under a second; the
smp_snoop call at half the memory-touch rate (both profiles), rewrite out of place at half of
np.copy, snoop's event lines (text and JSON) written at 500 MB/s or more, snoop -T json on
changing Sets 5x tshark's plain decode.
With -T json they follow the figures as records with a "target" key.

examples:
  madpipe bench                                  # 1M MADs, every group
  madpipe bench --n 100000 --what snoop,paravirt
  madpipe bench --n 2000000 --what api              # the Python API, as the README quotes it
  madpipe bench -T json > bench.jsonl"""


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        description="Build a seeded synthetic workload (SM traffic with ~10% real P_Key changes, "
        "QP-modify commands) and measure each stage of madpipe against a baseline in the same run.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=1_000_000, help="MADs, mailboxes and frames per run (default 1M)")
    p.add_argument("--what", default="snoop,paravirt,capture,startup,api",
                   help="comma-separated groups: snoop, paravirt, capture, startup, api (default all)")
    p.add_argument("--repeat", type=int, default=5,
                   help="runs per figure (and pairs with its baseline); medians are reported (default 5)")
    p.add_argument("--subset", type=int, default=20_000, help="items for the slow ways (default 20000)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def run(args) -> int:
    from madpipe.pipeline.bench.output import print_json, print_text
    from madpipe.pipeline.bench.runner import GROUPS, Bench
    from madpipe.pipeline.kernels import jit

    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = [w for w in what if w not in GROUPS]
    if unknown:
        raise MadpipeError(f"--what: unknown group {', '.join(unknown)} (choose from {', '.join(GROUPS)})")
    if args.n < 1000 or args.repeat < 1:
        raise MadpipeError("--n must be at least 1000 and --repeat at least 1")
    if not jit.enabled():
        print("madpipe bench: numba is off (MADPIPE_JIT=0 or NUMBA_DISABLE_JIT): kernels run as Python",
              file=sys.stderr)
    tty = sys.stderr.isatty()
    said = set()

    def progress(text: str) -> None:
        """Where the run is: one line rewritten on a terminal; else a line per figure (not per run)."""
        if tty:
            sys.stderr.write(f"\r\033[Kbench: {text}")
        else:
            figure = text.rpartition(" (")[0]
            if figure in said:
                return
            said.add(figure)
            sys.stderr.write(f"bench: {figure}\n")
        sys.stderr.flush()

    print(f"madpipe bench: n={args.n}, groups {', '.join(what)}; the targets are set for --n 1000000; "
          "figures follow when every group is measured", file=sys.stderr, flush=True)
    bench = Bench(args.n, args.repeat, progress, subset=args.subset, seed=args.seed)
    for group in what:
        getattr(bench, group)()
    if tty:
        sys.stderr.write("\r\033[K")
    (print_json if args.format == "json" else print_text)(bench, sys.stdout)
    return 0
