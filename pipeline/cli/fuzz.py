"""`madpipe fuzz`: mutated MADs against madpipe's decoders and kernels, tshark and ibsim; findings as a capture."""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.cli.args import add_force, check_new_output, integer
from madpipe.pipeline.decode.output import jsonl

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
            a simulator that dies or goes silent is a finding; it runs in a private network
            namespace with only loopback (refused where none can be made, unless
            --allow-network-exposure)
  files     (alone; not in 'all') whole files: the bundled captures rewritten as every format
            madpipe reads (pcap us/ns, both byte orders, link types 197 with ERF extension
            headers and 247, pcapng with its blocks and options), a paravirt trace (JSON Lines,
            binary) and a --pkey-map file, mutated (header and block fields, lengths, options,
            interface ids, link types, ERF bits, records dropped, repeated, swapped, spliced,
            cuts at every boundary) and run in-process through decode (JSON and text), snoop,
            diff, report (the full page one case in --report-every, its data on every case),
            paravirt and --pkey-map. A finding: an exception, a command over --hang-seconds, an
            exit status other than 0/1/2, a traceback, an exit 2 that is not one line, decode
            and snoop disagreeing on the frames read, skipped (and why) or where the file ended.
            Each kept finding is minimised (its edits dropped while it stays); -w DIR gets the
            minimised files and DIR/findings.jsonl
{fabric}

Case N of seed S is the same in every run with the same corpus: --replay S:N shows it again,
with what was mutated and what each target says. Findings are grouped by kind; the first --keep
of each go to -w FILE (a capture Wireshark opens, frame time = case number) and FILE's .jsonl.
Exit status 0 when the run worked, findings or not; 2 when it could not run.

examples:
  madpipe fuzz --seed 1 --count 1000000 -w findings.pcap
  madpipe fuzz --target files --seed 1 --count 100000 -w file-findings/
  madpipe fuzz --target files --replay 1:1274 -w case.jsonl
  madpipe fuzz --seconds 60 --target all --corpus pcaps/infiniband_endace_erf_2008.pcap
  madpipe fuzz --replay 1:123456 -x{fabric_examples}"""


def register(sub) -> None:
    from madpipe.pipeline.cli import fuzz_fabric
    from madpipe.pipeline.fuzz.runner import TARGETS

    p = sub.add_parser(
        "fuzz",
        description="Mutate frames (from --corpus, or built-in SMPs and GMPs) field by field: boundary "
        "values, bit flips, truncation and extension, wrong PktLen, directed-route hop counts and "
        "paths out of range, P_KeyTable blocks past the table, P_Key indices past 127 in QP-context "
        "mailboxes, bad CRCs, reserved bits, responses without requests. Feed them to the targets "
        "and report what breaks, deduplicated, with a seed and case number that replay it. --target files "
        "mutates whole capture, trace and map files instead and runs madpipe's commands on them; "
        "--target opensm and diags mutate the answers a simulated fabric gives those tools (below).",
        epilog=EXAMPLE.format(fabric=fuzz_fabric.EXAMPLE, fabric_examples=fuzz_fabric.FABRIC_EXAMPLES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=integer, help="the run's seed (default: a new one, printed in the summary)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--count", "-c", type=integer, help="number of cases (default 10000)")
    how.add_argument("--seconds", type=float, metavar="S", help="run for S seconds instead of a count")
    p.add_argument("--start", type=integer, default=0, metavar="N", help="first case number (default 0)")
    p.add_argument("--target", nargs="+", metavar="T", choices=(*TARGETS, "all", "files", "opensm", "diags"),
                   help=f"targets: {', '.join(TARGETS)}, all (default codecs snoop paravirt); or files, opensm, "
                   "diags, alone")
    p.add_argument("--corpus", metavar="DIR|CAPTURE", help="seed frames from a capture or a directory of captures")
    p.add_argument("-w", dest="write", metavar="FILE", help="write findings as a capture (ERF, link type 197) "
                   "and as JSON Lines in FILE with the extension .jsonl; --target files: a directory for the "
                   "minimised files and findings.jsonl (with --replay: the case's file)")
    add_force(p)
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="stdout: text (a table at the end) or json (JSON Lines: findings, then a summary)")
    p.add_argument("-j", "--jobs", type=integer, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: one per CPU)")
    p.add_argument("--keep", type=integer, default=3, metavar="N", help="examples kept per kind of finding (default 3)")
    p.add_argument("--roundtrip-every", type=integer, default=8, metavar="N",
                   help="codecs: round-trip every layer of one case in N (default 8; 1 = all)")
    p.add_argument("--allow-network-exposure", action="store_true",
                   help="--target ibsim: where no private network namespace can be made, run ibsim "
                   "with its UDP ports open on every interface (default: refuse)")
    p.add_argument("--report-every", type=integer, default=64, metavar="N",
                   help="files: the full madpipe report (matplotlib, ~1 s) on one case in N (default 64; 1 = all)")
    p.add_argument("--hang-seconds", type=float, metavar="S",
                   help="files: a command running longer than S seconds is a hang (default 20); opensm, "
                   "diags: a tool that sends and gets no MAD for S seconds (default 5; opensm 15)")
    p.add_argument("--replay", metavar="SEED:CASE", help="replay one case and say what each target makes of it")
    p.add_argument("-x", dest="hex", action="store_true", help="with --replay: hex dump of the frame")
    fuzz_fabric.add_arguments(p)
    p.set_defaults(func=run)


def _targets(args):
    from madpipe.pipeline.fuzz.output import unavailable
    from madpipe.pipeline.fuzz.runner import DEFAULT_TARGETS, TARGETS

    if not args.target:
        return list(DEFAULT_TARGETS)
    for alone in ("files", "opensm", "diags"):
        if alone in args.target and len(set(args.target)) > 1:
            raise MadpipeError(f"--target {alone} runs alone: its cases are "
                               f"{'whole files' if alone == 'files' else 'tool runs'}, the other targets' are frames")
    if "all" in args.target:  # every target but the outside tools that are not there, said so
        chosen = []
        for target in TARGETS:
            why = unavailable(target)
            if why:
                print(f"madpipe fuzz: leaving out target {target}: {why}", file=sys.stderr)
            else:
                chosen.append(target)
        return chosen
    return list(dict.fromkeys(args.target))


#: Fuzz runs of at most this many cases are small jobs (plain Python unless the build exists).
SMALL_RUN = 4096


def run(args) -> int:
    """--target ibsim (or all): into the private network first, while the process has one thread.

    Without root that takes a user namespace, which a process with threads cannot enter, and
    importing numpy starts one. The ibsim target shares this namespace.
    """
    from madpipe.pipeline.sim.netns import PrivateNetwork, contain

    network = PrivateNetwork()
    if set(args.target or ()) & {"ibsim", "all", "opensm", "diags"} and shutil.which("ibsim"):
        contain(network, args.allow_network_exposure, "madpipe fuzz")
    try:
        return _run(args)
    finally:
        network.leave()


def _run(args) -> int:
    from madpipe.pipeline.fuzz import runner as fuzz
    from madpipe.pipeline.fuzz.findings import Reporter
    from madpipe.pipeline.fuzz.output import Progress, findings_jsonl_path, print_text, summary_json
    from madpipe.pipeline.kernels import jit

    if args.replay:
        jit.plan(large=False)  # one case (its batch): never a build for it
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
    # A run of one batch is done in seconds as plain Python (4096 cases: 7.1 s, against 5.7 s
    # compiled and 20-25 s to build first): compile only for more.
    jit.plan(large=count is None or count > SMALL_RUN)
    targets = _targets(args)
    if targets == ["files"]:
        return run_files(args, seed, count)
    if targets in (["opensm"], ["diags"]):
        from madpipe.pipeline.cli import fuzz_fabric

        return fuzz_fabric.run(args, seed, count)
    opts = fuzz.Options(seed=seed, count=count, seconds=args.seconds, targets=tuple(targets), corpus=args.corpus,
                        jobs=args.jobs, roundtrip_every=args.roundtrip_every, keep=args.keep, start=args.start,
                        allow_network_exposure=args.allow_network_exposure)
    out = sys.stdout
    as_json = args.format == "json"
    jsonl_path = findings_jsonl_path(args.write) if args.write else None
    for path in (args.write, jsonl_path):
        check_new_output(path, args.force)

    def factory(mutator):
        return Reporter(mutator, args.write, jsonl_path,
                        on_finding=(lambda rec: jsonl(rec, out)) if as_json else None)

    show = Progress(count, args.seconds) if sys.stderr.isatty() else None
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


def run_replay(args) -> int:
    from madpipe.codecs.capture import CaptureWriter
    from madpipe.pipeline.fuzz import runner as fuzz
    from madpipe.pipeline.fuzz.output import print_replay

    text = args.replay
    try:
        seed_text, case_text = text.split(":")
        seed, index = int(seed_text, 0), int(case_text, 0)
        if index < 0:
            raise ValueError
    except ValueError:
        raise MadpipeError(f"--replay {text!r}: expected SEED:CASE, e.g. 1:12345") from None
    targets = _targets(args)
    check_new_output(args.write, args.force)
    if targets == ["files"]:
        return replay_files(args, seed, index)
    if targets in (["opensm"], ["diags"]):
        from madpipe.pipeline.cli import fuzz_fabric

        return fuzz_fabric.replay(args, seed, index)
    opts = fuzz.Options(seed=seed, allow_network_exposure=args.allow_network_exposure)
    one, findings = fuzz.replay(seed, index, targets, args.corpus, opts)
    out = sys.stdout
    print_replay(seed, index, one, findings, targets, out, format=args.format, hex=args.hex)
    if args.write:
        with CaptureWriter(args.write) as w:
            w.write(one.frame(0), ts_ns=index * 1_000_000_000)
    out.flush()
    return 0


def run_files(args, seed: int, count) -> int:
    from madpipe.pipeline.cli.main import main
    from madpipe.pipeline.fuzz import files_runner
    from madpipe.pipeline.fuzz.output import Progress, print_files_text, summary_json

    if args.hang_seconds is None:
        args.hang_seconds = 20.0
    if args.report_every < 0 or args.hang_seconds <= 0:
        raise MadpipeError("--report-every must be 0 or more and --hang-seconds positive")
    if args.corpus:
        raise MadpipeError("--target files starts from the bundled captures: drop --corpus")
    if args.write and os.path.exists(args.write) and not args.force and (
            not os.path.isdir(args.write) or os.listdir(args.write)):
        raise MadpipeError(f"{args.write}: exists and is not an empty folder: --force to write into it")
    opts = files_runner.FilesOptions(seed=seed, count=count, seconds=args.seconds, start=args.start,
                                     jobs=args.jobs, keep=args.keep, hang_seconds=args.hang_seconds,
                                     report_every=args.report_every, write=args.write)
    out = sys.stdout
    show = Progress(count, args.seconds) if sys.stderr.isatty() else None
    on_finding = (lambda rec: jsonl(rec, out)) if args.format == "json" else None
    summary = files_runner.run(opts, main, show, on_finding)
    if show is not None:
        show.done()
    if args.format == "json":
        jsonl(summary_json(summary, opts, args.write, None), out)
    else:
        print_files_text(summary, opts, out)
    out.flush()
    if summary.interrupted:
        print("madpipe fuzz: interrupted; the summary covers the cases run", file=sys.stderr)
        return 130
    return 0


def replay_files(args, seed: int, index: int) -> int:
    from madpipe.pipeline.cli.main import main
    from madpipe.pipeline.fuzz import files_runner
    from madpipe.pipeline.fuzz.output import print_files_replay

    seed_file, edits, minimal, data, findings = files_runner.replay(seed, index, main, args.hang_seconds or 20.0)
    print_files_replay(seed, index, seed_file, edits, minimal, data, findings, sys.stdout,
                       format=args.format, hex=args.hex)
    if args.write:
        with open(args.write, "wb") as f:
            f.write(data)
    sys.stdout.flush()
    return 0
