"""``madpipe fuzz --target opensm|diags``: the tools that trust a fabric's answers, against one that lies.

::

    from madpipe.pipeline.fuzz import fabric_runner
    summary = fabric_runner.run(fabric_runner.FabricOptions(kind="diags", seed=1, count=200))
    summary.groups     # {signature: Group}: crashes by crash site, hangs, sanitizer reports, wrong answers

Case N of seed S is one tool run whose answers are mutated as the seed and N say
(:class:`~madpipe.pipeline.fuzz.targets.fabric.FabricTarget`), so ``--replay S:N`` runs it again;
``--only 2,5`` keeps only those edits (numbered in the order the answers came). Findings are grouped
by crash site (or sanitizer site, or the field a wrong answer is about); the first ``keep`` of each
group are minimised (edits dropped one at a time, last first, while the same finding stays) and,
with ``write``, saved as a capture of the whole minimised exchange plus the one command that
reproduces it.
"""
from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from madpipe.codecs.capture import CaptureWriter
from madpipe.pipeline.fuzz.findings import Group
from madpipe.pipeline.fuzz.mutate.answers import Edit
from madpipe.pipeline.fuzz.runner import Summary
from madpipe.pipeline.fuzz.targets.fabric import DEFAULT_TOPOLOGY, FabricTarget, Outcome
from madpipe.pipeline.sim.packets import datagrams_to_packets


@dataclass
class FabricOptions:
    kind: str = "diags"                  # "opensm" or "diags"
    seed: int = 0
    count: int | None = 1000
    seconds: float | None = None
    start: int = 0
    tools: tuple | None = None           # diags: which of ibnetdiscover, smpquery, perfquery
    topology: str = DEFAULT_TOPOLOGY
    rate: float | None = None            # share of answers mutated (default: per tool)
    keep: int = 3
    hang_seconds: float | None = None    # default: diags 5 s, opensm 15 s (DEFAULT_HANG_SECONDS)
    tool_seconds: float = 20.0
    opensm_binary: str | None = None
    diags_dir: str | None = None
    write: str | None = None             # a directory: minimised captures, findings.jsonl
    allow_network_exposure: bool = False

    @property
    def targets(self) -> tuple:          # for the summary printers the frame targets share
        return (self.kind,)


def make_target(opts: FabricOptions, workdir: str) -> FabricTarget:
    return FabricTarget(opts.kind, opts.seed, workdir, tools=opts.tools, topology=opts.topology, rate=opts.rate,
                        hang_seconds=opts.hang_seconds, tool_seconds=opts.tool_seconds,
                        opensm_binary=opts.opensm_binary, diags_dir=opts.diags_dir,
                        allow_network_exposure=opts.allow_network_exposure)


def reproducer(opts: FabricOptions, case: int, only: list[int] | None) -> str:
    """The one command that runs case ``case`` again with the edits ``only`` (1-based; None: all)."""
    argv = ["madpipe", "fuzz", "--target", opts.kind]
    if opts.tools:
        argv += ["--tool", *opts.tools]
    if opts.topology != DEFAULT_TOPOLOGY:
        argv += ["--sim", opts.topology]
    if opts.rate is not None:
        argv += ["--rate", f"{opts.rate:g}"]
    if opts.opensm_binary:
        argv += ["--opensm-binary", opts.opensm_binary]
    if opts.diags_dir:
        argv += ["--diags-dir", opts.diags_dir]
    argv += ["--replay", f"{opts.seed}:{case}"]
    if only is not None:
        argv += ["--only", ",".join(map(str, only)) or "none"]
    return shlex.join(argv)


def plan_of(edits: list[tuple[str, Edit]]) -> dict[str, list[Edit]]:
    plan: dict[str, list[Edit]] = {}
    for key, e in edits:
        plan.setdefault(key, []).append(e)
    return plan


def minimise(target: FabricTarget, out: Outcome, signature, budget: float | None = None
             ) -> tuple[list[int], Outcome | None]:
    """The fewest of the case's edits (1-based numbers) that still give ``signature``, and that run.

    Runs of edits are dropped while the finding stays, halves first, then quarters, down to one
    edit at a time, last first (a hang costs a run of ``hang_seconds``: halving keeps them few).
    (all, None) when the whole case does not give it again (a finding that depends on timing).
    After ``budget`` seconds (default 60) it stops with what it has: a hang makes every try as
    long as the hang timeout.
    """
    deadline = time.monotonic() + (60.0 if budget is None else budget)
    edits = out.edits
    keep = list(range(1, len(edits) + 1))
    last = target.run_case(out.case, plan_of(edits))
    if signature not in {f.signature for f in last.findings}:
        return keep, None
    size = max(1, len(keep) // 2)
    while keep:
        for start in reversed(range(0, len(keep), size)):
            if time.monotonic() > deadline:
                return keep, last
            trial = keep[:start] + keep[start + size:]
            got = target.run_case(out.case, plan_of([edits[n - 1] for n in trial]))
            if signature in {f.signature for f in got.findings}:
                keep, last = trial, got
        if size == 1:
            break
        size = max(1, size // 2)
    return keep, last


def write_capture(path: str, out: Outcome, target: FabricTarget) -> int:
    packets = datagrams_to_packets(out.datagrams, target.sim.relay.connections, Counter())
    with CaptureWriter(path) as w:
        for ts, packet in packets:
            w.write(packet, ts)
    return len(packets)


def example(opts: FabricOptions, target: FabricTarget, f, out: Outcome) -> dict:
    """A finding's record: minimised, with its capture (when writing) and reproducer."""
    keep, small = minimise(target, out, f.signature)
    edits = out.edits
    rec = {"type": "finding", "target": f.target, "kind": f.kind, "severity": f.severity, "what": f.what,
           "key": f.key, "seed": opts.seed, "case": out.case, "replay": f"{opts.seed}:{out.case}",
           "tool": out.tool, "argv": out.argv, "exit": out.returncode,
           "edits": [{"n": n, "answer": key, **e.to_json()} for n, (key, e) in enumerate(edits, 1)],
           "minimal_edits": keep, "reproduced": small is not None,
           "minimal": [f"{_attribute(out, edits[n - 1][0])} {edits[n - 1][1].note()}" for n in keep],
           "reproducer": reproducer(opts, out.case, keep if small is not None else None)}
    rec.update(f.data)
    if opts.write:
        path = os.path.join(opts.write, f"case-{opts.seed}-{out.case}.pcap")
        rec["frames"] = write_capture(path, small or out, target)
        rec["capture"] = path
    return rec


def _attribute(out: Outcome, key: str) -> str:
    return next((x.attribute for x in out.exchanges if x.key == key), "?")


def run(opts: FabricOptions, progress=None, on_finding=None) -> Summary:
    """Run ``opts.count`` cases (or ``opts.seconds``); ``progress(summary, target)`` after each."""
    summary = Summary(corpus=f"fabric {os.path.basename(opts.topology)}", corpus_digest="-", seeds=0)
    if opts.write:
        os.makedirs(opts.write, exist_ok=True)
    log = open(os.path.join(opts.write, "findings.jsonl"), "w") if opts.write else None
    workdir = tempfile.mkdtemp(prefix=f"madpipe-fuzz-{opts.kind}-")
    t0 = time.monotonic()
    target = None
    try:
        target = make_target(opts, workdir)
        case = opts.start
        while (opts.count is None or case < opts.start + opts.count) and \
                (opts.seconds is None or time.monotonic() - t0 < opts.seconds):
            out = target.run_case(case)
            summary.cases += 1
            for f in out.findings:
                g = summary.groups.get(f.signature)
                if g is None:
                    g = summary.groups[f.signature] = Group(f.target, f.kind, f.severity, f.key)
                g.count += 1
                if len(g.examples) < opts.keep:
                    summary.keep_example(f.signature, example(opts, target, f, out), log, on_finding)
            case += 1
            summary.seconds = time.monotonic() - t0
            summary.stats[opts.kind] = stats_of(target)
            if progress is not None:
                progress(summary, target)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if target is not None:
            summary.stats[opts.kind] = stats_of(target)
            target.close()
        if log is not None:
            log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = time.monotonic() - t0
    return summary


def stats_of(target: FabricTarget) -> Counter:
    c = Counter(target.stats)
    for name, n in target.mutated.items():
        c[f"mutated {name}"] = n
    for name, n in target.fields.items():
        c[f"field {name}"] = n
    return c


def replay(opts: FabricOptions, case: int, only: list[int] | None = None) -> tuple[Outcome, FabricTarget, str]:
    """Case ``case`` again (``only``: just those edits, 1-based); the capture goes to ``opts.write``."""
    workdir = tempfile.mkdtemp(prefix=f"madpipe-replay-{opts.kind}-")
    target = make_target(opts, workdir)
    try:
        out = target.run_case(case)
        if only is not None:
            bad = [n for n in only if not 1 <= n <= len(out.edits)]
            if bad:
                from madpipe.codecs.errors import MadpipeError
                raise MadpipeError(f"--only {bad[0]}: case {opts.seed}:{case} has edits 1..{len(out.edits)}")
            full = out
            out = target.run_case(case, plan_of([full.edits[n - 1] for n in only]))
        if opts.write:
            write_capture(opts.write, out, target)
    finally:
        target.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return out, target, reproducer(opts, case, only)
