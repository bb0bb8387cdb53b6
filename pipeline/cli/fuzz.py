"""`madpipe fuzz`: mutated MADs against madpipe's decoders and kernels, tshark and ibsim; findings as a capture."""
from __future__ import annotations

import argparse
import os
import sys
import time

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.decode.output import hexdump, jsonl
from madpipe.pipeline.cli.args import integer

EXAMPLE = """targets (--target, several allowed; default codecs snoop paravirt; 'all' for every one):
  codecs    decode_frame never raises; errors name offset and field; layers round-trip through
            the plain and compiled schemas (and the scapy layers) on a sample; the numba ingest
            finds every frame and every MAD decode_frame finds
  snoop     smp_snoop numba kernel against the Python reference, bit for bit; out-of-range
            P_KeyTable blocks, GUIDInfo blocks and ports are findings (severity kernel)
  paravirt  QP-context rewrite numba kernel against the reference; P_Key indices 128..255 and
            reads past virt2phys_pkey are findings; virtual_pkey_getresp on P_KeyTable MADs
  tshark    the cases as an ERF capture through tshark: crash, hang, malformed, dissector bug
  ibsim     each MAD to an ibsim started for the run (opensm assigns LIDs), then a probe:
            a simulator that dies or goes silent is a finding

Case N of seed S is the same in every run with the same corpus: --replay S:N shows it again,
with what was mutated and what each target says. Findings are grouped by kind; the first --keep
of each go to -w FILE (a capture Wireshark opens, frame time = case number) and FILE's .jsonl.
Exit status 0 when the run worked, findings or not; 2 when it could not run.

examples:
  madpipe fuzz --seed 1 --count 1000000 -w findings.pcap
  madpipe fuzz --seconds 60 --target all --corpus pcaps/infiniband_endace_erf_2008.pcap
  madpipe fuzz --replay 1:123456 -x"""


def register(sub) -> None:
    from madpipe.pipeline.fuzz.runner import TARGETS

    p = sub.add_parser(
        "fuzz",
        help="fuzz MAD parsers and the mlx4 kernel model with structure-aware mutations",
        description="Mutate frames (from --corpus, or built-in SMPs and GMPs) field by field: boundary "
        "values, bit flips, truncation and extension, wrong PktLen, directed-route hop counts and "
        "paths out of range, P_KeyTable blocks past the table, P_Key indices past 127 in QP-context "
        "mailboxes, bad CRCs, reserved bits, responses without requests. Feed them to the targets "
        "and report what breaks, deduplicated, with a seed and case number that replay it.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=integer, help="the run's seed (default: a new one, printed in the summary)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--count", "-c", type=integer, help="number of cases (default 10000)")
    how.add_argument("--seconds", type=float, metavar="S", help="run for S seconds instead of a count")
    p.add_argument("--start", type=integer, default=0, metavar="N", help="first case number (default 0)")
    p.add_argument("--target", nargs="+", metavar="T", choices=(*TARGETS, "all"),
                   help=f"targets: {', '.join(TARGETS)}, all (default codecs snoop paravirt)")
    p.add_argument("--corpus", metavar="DIR|CAPTURE", help="seed frames from a capture or a directory of captures")
    p.add_argument("-w", dest="write", metavar="FILE", help="write findings as a capture (ERF, link type 197) "
                   "and as JSON Lines in FILE with the extension .jsonl")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="stdout: text (a table at the end) or json (JSON Lines: findings, then a summary)")
    p.add_argument("-j", "--jobs", type=integer, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: one per CPU)")
    p.add_argument("--keep", type=integer, default=3, metavar="N", help="examples kept per kind of finding (default 3)")
    p.add_argument("--roundtrip-every", type=integer, default=8, metavar="N",
                   help="codecs: round-trip every layer of one case in N (default 8; 1 = all)")
    p.add_argument("--replay", metavar="SEED:CASE", help="replay one case and say what each target makes of it")
    p.add_argument("-x", dest="hex", action="store_true", help="with --replay: hex dump of the frame")
    p.set_defaults(func=run)



def _jsonl_path(path: str) -> str:
    root, ext = os.path.splitext(path)
    return (root if ext.lower() in (".pcap", ".pcapng", ".cap") else path) + ".jsonl"


def _targets(args):
    from madpipe.pipeline.fuzz.runner import DEFAULT_TARGETS, TARGETS

    if not args.target:
        return list(DEFAULT_TARGETS)
    if "all" in args.target:
        return [t for t in TARGETS if _available(t)]
    return list(dict.fromkeys(args.target))


def _available(target: str) -> bool:
    """--target all leaves out the outside tools that are not there, and says so."""
    import shutil

    why = None
    if target == "tshark" and shutil.which("tshark") is None:
        why = "tshark is not installed"
    elif target == "ibsim" and shutil.which("ibsim") is None:
        why = "ibsim is not installed (Debian package ibsim-utils)"
    if why:
        print(f"madpipe fuzz: leaving out target {target}: {why}", file=sys.stderr)
    return why is None


def run(args) -> int:
    from madpipe.pipeline.fuzz import runner as fuzz

    if args.replay:
        return run_replay(args)
    for name in ("count", "jobs", "keep", "roundtrip_every"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "keep" else 1):
            raise MadpipeError(f"--{name.replace('_', '-')} must be at least {0 if name == 'keep' else 1}, got {value}")
    if args.start < 0:
        raise MadpipeError(f"--start must be 0 or more, got {args.start}")
    if args.seconds is not None and args.seconds <= 0:
        raise MadpipeError(f"--seconds must be positive, got {args.seconds}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    count = None if args.seconds is not None else (args.count if args.count is not None else 10_000)
    targets = _targets(args)
    opts = fuzz.Options(seed=seed, count=count, seconds=args.seconds, targets=tuple(targets), corpus=args.corpus,
                        jobs=args.jobs, roundtrip_every=args.roundtrip_every, keep=args.keep, start=args.start)
    out = sys.stdout
    as_json = args.format == "json"
    jsonl_path = _jsonl_path(args.write) if args.write else None

    def factory(mutator):
        return fuzz.Reporter(mutator, args.write, jsonl_path,
                             on_finding=(lambda rec: jsonl(rec, out)) if as_json else None)

    show = _Progress(count, args.seconds) if sys.stderr.isatty() else None
    summary = fuzz.run(opts, factory, show)
    if show is not None:
        show.done()
    if as_json:
        jsonl(summary_json(summary, opts, args.write, jsonl_path), out)
    else:
        print_text(summary, opts, out, args.write, jsonl_path)
    out.flush()
    if summary.interrupted:
        print("madpipe fuzz: interrupted; the summary covers the cases run", file=sys.stderr)
        return 130
    return 0


class _Progress:
    """One line on stderr, redrawn at most twice a second."""

    def __init__(self, count, seconds):
        self.count, self.seconds, self.last = count, seconds, 0.0

    def __call__(self, s) -> None:
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        total = f"/{self.count:,}" if self.count else f" ({s.seconds:.0f}/{self.seconds:.0f} s)"
        rate = s.cases / s.seconds if s.seconds else 0
        bugs = sum(g.count for g in s.groups.values() if g.severity == "bug")
        sys.stderr.write(f"\rmadpipe fuzz: {s.cases:,}{total} cases, {rate:,.0f}/s, {len(s.groups)} kinds of "
                         f"finding, {bugs} bugs ")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def _stats_text(name: str, c) -> str:
    order = {
        "codecs": ["decoded", "refused with an error", "full MADs", "roundtrip", "scapy", "ingested"],
        "snoop": ["MADs", "snooped", "master events", "spill", "refused"],
        "paravirt": ["mailboxes", "spill", "refused", "getresp", "getresp spill", "getresp refused"],
        "tshark": ["frames", "malformed", "dissector-bug", "crash", "hang"],
        "ibsim": ["sent", "answers", "dead", "silent"],
    }.get(name, [])
    keys = [k for k in order if k in c] + sorted(k for k in c if k not in order)
    return ", ".join(f"{c[k]:,} {k}" for k in keys)


def print_text(s, opts, out, capture=None, jsonl_path=None) -> None:
    rate = s.cases / s.seconds if s.seconds else 0
    out.write(f"madpipe fuzz: seed {opts.seed}, {s.cases:,} cases (from {opts.start}) in {s.seconds:.1f} s "
              f"({rate:,.0f}/s, {opts.jobs} jobs); corpus {s.corpus} ({s.seeds} seeds, digest {s.corpus_digest})\n")
    for name in opts.targets:
        if name in s.stats:
            out.write(f"  {name:<9} {_stats_text(name, s.stats[name])}\n")
    from madpipe.pipeline.fuzz.runner import scapy_layers

    if "codecs" in opts.targets and scapy_layers() is None:
        out.write("  (the scapy layers, madpipe.codecs.layers, cannot be imported: not checked)\n")
    bugs = s.findings("bug")
    if s.groups:
        out.write("\nFindings (the first case of each replays with --replay SEED:CASE):\n")
        out.write(f"  {'count':>9}  {'target':<8}  {'kind':<16}  {'severity':<8}  {'first case':>10}  what\n")
        order = {"bug": 0, "tool": 1, "kernel": 2}
        for g in sorted(s.groups.values(), key=lambda g: (order.get(g.severity, 3), g.target, g.kind, -g.count)):
            first = g.examples[0] if g.examples else {}
            what = first.get("what", g.key) if g.severity != "kernel" else g.key
            out.write(f"  {g.count:>9,}  {g.target:<8}  {g.kind:<16}  {g.severity:<8}  "
                      f"{first.get('case', ''):>10}  {what[:160]}\n")
    out.write("\n")
    if not bugs:
        out.write("No crash and no mismatch in madpipe.\n")
    else:
        out.write(f"{sum(g.count for g in bugs):,} bug findings in {len(bugs)} kinds: replay them with --replay.\n")
    if capture:
        kept = sum(1 for g in s.groups.values() for e in g.examples if "capture_frame" in e)
        out.write(f"Findings written to {capture} ({kept} frames) and {jsonl_path}.\n")


def summary_json(s, opts, capture=None, jsonl_path=None) -> dict:
    return {
        "type": "summary", "seed": opts.seed, "start": opts.start, "cases": s.cases,
        "seconds": round(s.seconds, 3), "jobs": opts.jobs, "targets": list(opts.targets),
        "corpus": s.corpus, "corpus_digest": s.corpus_digest, "seeds": s.seeds,
        "stats": {k: dict(v) for k, v in s.stats.items()},
        "groups": [{"target": g.target, "kind": g.kind, "severity": g.severity, "key": g.key, "count": g.count,
                    "first_case": g.examples[0]["case"] if g.examples else None} for g in s.groups.values()],
        "bugs": sum(g.count for g in s.findings("bug")),
        "interrupted": s.interrupted, "capture": capture, "jsonl": jsonl_path,
    }


def run_replay(args) -> int:
    from madpipe.codecs.capture import CaptureWriter
    from madpipe.codecs.frame import decode_frame
    from madpipe.pipeline.fuzz import runner as fuzz
    from madpipe.pipeline.decode.text import line

    text = args.replay
    try:
        seed_text, case_text = text.split(":")
        seed, index = int(seed_text, 0), int(case_text, 0)
        if index < 0:
            raise ValueError
    except ValueError:
        raise MadpipeError(f"--replay {text!r}: expected SEED:CASE, e.g. 1:12345") from None
    targets = _targets(args)
    one, findings = fuzz.replay(seed, index, targets, args.corpus)
    frame = one.frame(0)
    rec = decode_frame(frame, 1, 0.0)
    out = sys.stdout
    if args.format == "json":
        jsonl({"type": "case", "seed": seed, "case": index, "corpus_seed": one.corpus.names[int(one.seed_id[0])],
               "frame": frame.hex(), "mutations": one.notes[0],
               "changed_fields": fuzz._jsonable_changes(one.changed_fields(0)),
               "mailbox": one.mailboxes[0].tobytes().hex(), "decode": rec}, out)
        for f in findings:
            jsonl({"type": "finding", "target": f.target, "kind": f.kind, "severity": f.severity, "what": f.what,
                   "key": f.key, "case": f.case, **f.data}, out)
    else:
        out.write(f"case {seed}:{index}, from {one.corpus.names[int(one.seed_id[0])]}, {len(frame)} bytes\n")
        out.write("mutations:\n")
        for n in one.notes[0]:
            out.write(f"  {n}\n")
        changes = one.changed_fields(0)
        if changes:
            out.write("changed fields: " + ", ".join(f"{c['field']} {_short(c['old'])} -> {_short(c['new'])}"
                                                    for c in changes) + "\n")
        out.write("decode: " + line(rec, 0.0).rstrip() + "\n")
        if "error" in rec:
            out.write(f"  error: {rec['error']}\n")
        if args.hex:
            hexdump(frame, out)
        out.write("targets:\n")
        for name in targets:
            mine = [f for f in findings if f.target == name]
            if not mine:
                out.write(f"  {name}: nothing found\n")
            for f in mine:
                out.write(f"  {name}: {f.kind} ({f.severity}): {f.what}\n")
    if args.write:
        with CaptureWriter(args.write) as w:
            w.write(frame, ts_ns=index * 1_000_000_000)
    out.flush()
    return 0


def _short(v) -> str:
    if isinstance(v, int):
        return f"0x{v:x}" if v < 1 << 64 else f"0x{v:x}"[:18] + "…"
    return str(v)
