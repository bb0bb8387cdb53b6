"""`madpipe fuzz --target opensm|diags`: the run, a replay of one case, progress and summary."""
from __future__ import annotations

import os
import signal
import sys
import time

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.decode.output import jsonl

EXAMPLE = """  opensm    (alone) opensm --once against ibsim (--sim, default net.2sw2path4hca) whose answers
            are mutated field by field in madpipe's relay: NodeInfo, PortInfo, SwitchInfo,
            P_KeyTable, LinearForwardingTable, NodeDescription fields (counts, port numbers, LIDs,
            GUIDs, capability bits), directed-route hop pointer, hop count and path, attribute ID
            and modifier, status; ibsim is restarted for every case
  diags     (alone) the same for ibnetdiscover, smpquery and perfquery (--tool to choose) against
            a fabric opensm brought up first. Findings: crash (signal; gdb's backtrace of the core
            names the crash site), hang (no MAD for --hang-seconds: diags 5, opensm 15, longer
            than its 10 s sweep interval, after which it sweeps again), a sanitizer report
            (an ASan/UBSan build: --opensm-binary, --diags-dir), and for smpquery nodeinfo,
            portinfo and switchinfo a wrong answer (a printed value the answer does not say).
            Each kept finding is minimised to the fewest edits and, with -w DIR, saved as a
            capture of the exchange; its one-command reproducer is in DIR/findings.jsonl"""

FABRIC_EXAMPLES = """
  madpipe fuzz --target diags --tool smpquery --seed 1 --count 200 -w diag-findings/
  madpipe fuzz --target opensm --seed 1 --count 100 --keep 1 -w osm-findings/
  madpipe fuzz --target diags --tool ibnetdiscover --replay 1:137 --only 1"""


def add_arguments(p) -> None:
    g = p.add_argument_group("--target opensm / diags")
    g.add_argument("--tool", nargs="+", metavar="TOOL", choices=("ibnetdiscover", "smpquery", "perfquery"),
                   help="diags: which tools (default ibnetdiscover smpquery perfquery; a case runs one)")
    g.add_argument("--sim", metavar="TOPOLOGY", help="ibsim topology file or the name of one of ibsim's "
                   "examples (default net.2sw2path4hca)")
    g.add_argument("--rate", type=float, metavar="P", help="share of answers mutated (default: opensm 0.05, "
                   "ibnetdiscover 0.1, smpquery and perfquery 1)")
    g.add_argument("--tool-seconds", type=float, default=20.0, metavar="S",
                   help="a tool run longer than S seconds is a hang (default 20; unmutated, opensm --once "
                   "takes 0.1 s here)")
    g.add_argument("--opensm-binary", metavar="PATH", help="opensm to run (e.g. an AddressSanitizer build)")
    g.add_argument("--diags-dir", metavar="DIR", help="where ibnetdiscover, smpquery, perfquery are (e.g. an "
                   "ASan build's bin/)")
    g.add_argument("--only", metavar="N,N", help="with --replay: apply only these of the case's edits "
                   "(numbered as --replay lists them; 'none' for none)")


def options(args, seed: int, count):
    from madpipe.pipeline.fuzz.fabric_runner import FabricOptions

    if args.corpus:
        raise MadpipeError(f"--target {args.target[0]} mutates the fabric's answers: drop --corpus")
    if args.rate is not None and not 0 < args.rate <= 1:
        raise MadpipeError(f"--rate must be in (0, 1], got {args.rate:g}")
    from madpipe.pipeline.fuzz.targets.fabric import DEFAULT_HANG_SECONDS

    hang = DEFAULT_HANG_SECONDS[args.target[0]] if args.hang_seconds is None else args.hang_seconds
    if hang <= 0 or args.tool_seconds <= 0:
        raise MadpipeError("--hang-seconds and --tool-seconds must be positive")
    if args.tool and args.target[0] == "opensm":
        raise MadpipeError("--tool chooses among the diags: --target diags")
    return FabricOptions(kind=args.target[0], seed=seed, count=count, seconds=args.seconds, start=args.start,
                         tools=tuple(args.tool) if args.tool else None, topology=args.sim or "net.2sw2path4hca",
                         rate=args.rate, keep=args.keep, hang_seconds=hang, tool_seconds=args.tool_seconds,
                         opensm_binary=args.opensm_binary, diags_dir=args.diags_dir, write=args.write,
                         allow_network_exposure=args.allow_network_exposure)


class Progress:
    """exchanges/s, distinct crash sites and the attributes mutated, on stderr: redrawn on a terminal,
    a line every ``every`` seconds otherwise (a log)."""

    def __init__(self, count, every: float = 10.0):
        self.count, self.tty, self.last = count, sys.stderr.isatty(), 0.0
        self.every = 0.5 if self.tty else every

    def __call__(self, s, target) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        st = target.stats
        rate = st["exchanges"] / s.seconds if s.seconds else 0
        sites = sum(1 for g in s.groups.values() if g.kind in ("crash", "sanitizer"))
        top = ", ".join(f"{k} {n:,}" for k, n in target.mutated.most_common(5))
        total = f"/{self.count:,}" if self.count else ""
        text = (f"madpipe fuzz: {s.cases:,}{total} runs, {st['exchanges']:,} exchanges ({rate:,.0f}/s), "
                f"{st['mutated']:,} mutated, {sites} crash sites, {len(s.groups)} kinds of finding; mutated: {top}")
        sys.stderr.write(f"\r\033[K{text}" if self.tty else text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def run(args, seed: int, count) -> int:
    from madpipe.pipeline.fuzz import fabric_runner

    opts = options(args, seed, count)
    if args.write and os.path.exists(args.write) and not args.force and (
            not os.path.isdir(args.write) or os.listdir(args.write)):
        raise MadpipeError(f"{args.write}: exists and is not an empty folder: --force to write into it")
    out = sys.stdout
    signal.signal(signal.SIGTERM, _interrupt)  # stopped by kill: still stop ibsim and the tool first
    show = Progress(count)
    on_finding = (lambda rec: jsonl(rec, out)) if args.format == "json" else None
    summary = fabric_runner.run(opts, show, on_finding)
    show.done()
    stats = summary.stats.get(opts.kind, {})
    if args.format == "json":
        jsonl({"type": "summary", "target": opts.kind, "seed": seed, "runs": summary.cases,
               "seconds": round(summary.seconds, 3), "stats": dict(stats),
               "findings": [{"kind": g.kind, "key": g.key, "count": g.count} for g in summary.groups.values()],
               "write": args.write}, out)
    else:
        print_summary(summary, opts, stats, out)
    out.flush()
    if summary.interrupted:
        print("madpipe fuzz: interrupted; the summary covers the cases run", file=sys.stderr)
        return 130
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def print_summary(s, opts, stats, out) -> None:
    rate = stats.get("exchanges", 0) / s.seconds if s.seconds else 0
    out.write(f"madpipe fuzz --target {opts.kind}: seed {opts.seed}, {s.cases:,} runs (from {opts.start}) in "
              f"{s.seconds:.1f} s; {stats.get('exchanges', 0):,} exchanges ({rate:,.0f}/s), "
              f"{stats.get('mutated', 0):,} mutated; topology {opts.topology}\n")
    mutated = sorted(((k[8:], n) for k, n in stats.items() if k.startswith("mutated ")), key=lambda kv: -kv[1])
    if mutated:
        out.write("  mutated answers: " + ", ".join(f"{k} {n:,}" for k, n in mutated) + "\n")
    fields = sorted(((k[6:], n) for k, n in stats.items() if k.startswith("field ")), key=lambda kv: -kv[1])
    if fields:
        out.write(f"  {len(fields)} fields edited, most: " + ", ".join(f"{k} {n:,}" for k, n in fields[:8]) + "\n")
    rest = {k: n for k, n in stats.items() if not k.startswith(("mutated", "field ")) and k not in ("exchanges", "runs")}
    if rest:
        out.write("  " + ", ".join(f"{n:,} {k}" for k, n in sorted(rest.items())) + "\n")
    if not s.groups:
        out.write("no finding\n")
        return
    out.write(f"{'#':>3} {'kind':<13} {'count':>6}  {'where / what':<50} first case, minimal edits\n")
    for i, g in enumerate(s.groups.values(), 1):
        ex = g.examples[0] if g.examples else {}
        out.write(f"{i:>3} {g.kind:<13} {g.count:>6}  {g.key:<50} {ex.get('replay', '')} "
                  f"{'; '.join(ex.get('minimal', []))}\n")
        if ex:
            out.write(f"      reproduce: {ex['reproducer']}\n")
    if opts.write:
        out.write(f"findings: {os.path.join(opts.write, 'findings.jsonl')} (and a capture per example)\n")


def replay(args, seed: int, index: int) -> int:
    from madpipe.pipeline.fuzz import fabric_runner

    only = None
    if args.only is not None:
        try:
            only = [] if args.only == "none" else [int(x) for x in args.only.split(",")]
        except ValueError:
            raise MadpipeError(f"--only {args.only!r}: expected edit numbers, e.g. 2,5") from None
    opts = options(args, seed, 1)
    opts.write = None
    if args.write:
        opts.write = args.write  # the replayed exchange as a capture
    out_case, _target, command = fabric_runner.replay(opts, index, only)
    out = sys.stdout
    if args.format == "json":
        jsonl({"type": "replay", "replay": f"{seed}:{index}", "argv": out_case.argv, "exit": out_case.returncode,
               "edits": [{"n": n, "answer": k, **e.to_json()} for n, (k, e) in enumerate(out_case.edits, 1)],
               "findings": [{"kind": f.kind, "key": f.key, "what": f.what} for f in out_case.findings]}, out)
        return 0
    out.write(f"case {seed}:{index}: {' '.join(out_case.argv)} -> exit {out_case.returncode}, "
              f"{len(out_case.exchanges)} answers, {len(out_case.edits)} edited\n")
    n = 0
    for x in out_case.exchanges:
        for e in x.edits:
            n += 1
            out.write(f"  {n:>3}  {x.attribute:<22} {x.key:<36} {e.note()}\n")
    for f in out_case.findings:
        out.write(f"  {f.kind}: {f.what}\n")
        for ln in f.data.get("backtrace", [])[:8] if isinstance(f.data.get("backtrace"), list) else []:
            out.write(f"      {ln}\n")
    if not out_case.findings:
        out.write("  no finding\n")
    out.write(f"reproduce: {command}\n")
    return 0
