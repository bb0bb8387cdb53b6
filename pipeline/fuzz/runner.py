"""``madpipe fuzz``: targets that judge mutated cases, the runner, and what it reports.

::

    from madpipe.pipeline.fuzz import runner as fuzz
    from madpipe.pipeline.fuzz.targets.codecs import check_frame
    summary = fuzz.run(fuzz.Options(seed=1, count=100_000, targets=["codecs", "snoop", "paravirt"]))
    summary.groups       # {signature: Group(count, examples)}: what was found, deduplicated
    check_frame(b"...")  # the codecs target on one frame (also the atheris entry point's check)

Cases come from :mod:`madpipe.pipeline.fuzz.mutate.mutator`: case ``i`` of seed ``s`` is the same frame,
mailbox and inputs in any run with the same corpus, so ``--replay s:i`` replays it exactly.

Targets (each judges a whole batch; a finding names the case, what happened and why), each in
its own module, whose doc says what it checks:

- ``codecs`` (:mod:`~madpipe.pipeline.fuzz.targets.codecs`): ``decode_frame``, the layer-by-layer round
  trip with the plain and the compiled schemas, the scapy layers, and ``Ingest``;
- ``snoop`` (:mod:`~madpipe.pipeline.fuzz.targets.snoop`): the ``smp_snoop`` kernel against the reference,
  and ``fabric.snoop_capture``;
- ``paravirt`` (:mod:`~madpipe.pipeline.fuzz.targets.paravirt`): ``paravirt.rewrite`` against
  ``rewrite_reference``, and ``virtual_pkey_getresp``;
- ``tshark`` (:mod:`~madpipe.pipeline.fuzz.targets.tshark`): crashes, hangs and malformed frames;
- ``ibsim`` (:mod:`~madpipe.pipeline.fuzz.targets.ibsim`): a simulator that dies or stops answering.

Findings are grouped by signature (target, kind, key); each group counts every occurrence and
keeps the first ``keep`` examples in case order (:mod:`~madpipe.pipeline.fuzz.findings`). This
module holds the runner (:func:`run`, :func:`replay`); import a target's or the findings' names
from their own modules.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from madpipe.codecs.capture import CaptureWriter
from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.fuzz.findings import Group, Reporter
from madpipe.pipeline.fuzz.mutate.cases import BATCH, Cases, batch_config
from madpipe.pipeline.fuzz.mutate.corpus import Corpus
from madpipe.pipeline.fuzz.mutate.mutator import Mutator
from madpipe.pipeline.fuzz.targets.codecs import CodecsTarget
from madpipe.pipeline.fuzz.targets.ibsim import IbsimTarget
from madpipe.pipeline.fuzz.targets.paravirt import ParavirtTarget
from madpipe.pipeline.fuzz.targets.snoop import SnoopTarget
from madpipe.pipeline.fuzz.targets.tshark import TsharkTarget

TARGETS = ("codecs", "snoop", "paravirt", "tshark", "ibsim")
DEFAULT_TARGETS = ("codecs", "snoop", "paravirt")


# -- batch context -------------------------------------------------------------------------------

class BatchContext:
    """Per batch: the ERF capture of its frames (written once, on first use), decode records."""

    def __init__(self, cases: Cases, workdir: str):
        self.cases = cases
        self.workdir = workdir
        self.path = os.path.join(workdir, f"batch-{os.getpid()}.pcap")
        self._written = False
        self.records = None

    def capture(self) -> str:
        if not self._written:
            self.write_capture(self.path, self.cases, 0, len(self.cases))
            self._written = True
        return self.path

    @staticmethod
    def write_capture(path: str, cases: Cases, lo: int, hi: int) -> None:
        with CaptureWriter(path) as w:
            for k in range(lo, hi):
                w.write(cases.frame(k), ts_ns=int(cases.index[k]) * 1_000_000_000)


# -- options, runner, summary --------------------------------------------------------------------

@dataclass
class Options:
    seed: int = 0
    count: int | None = 10_000
    seconds: float | None = None
    targets: tuple = DEFAULT_TARGETS
    corpus: str | None = None
    jobs: int = 1
    roundtrip_every: int = 8
    scapy_every: int = 64
    keep: int = 3
    start: int = 0
    tshark_timeout: float = 60.0
    ibsim_timeout: float = 1.0
    allow_network_exposure: bool = False  # ibsim on the machine's network where no netns can be made


@dataclass
class Summary:
    cases: int = 0
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)          # target -> Counter
    groups: dict = field(default_factory=dict)         # signature -> Group
    interrupted: bool = False
    corpus: str = "builtin"
    corpus_digest: str = ""
    seeds: int = 0

    def findings(self, severity: str | None = None) -> list[Group]:
        return [g for g in self.groups.values() if severity is None or g.severity == severity]

    def keep_example(self, sig, rec: dict, log=None, on_finding=None) -> None:
        """Keep ``rec`` as an example of group ``sig``: numbered by its group, written to ``log`` as
        a JSON line (flushed: a killed run keeps what it found), handed to ``on_finding``."""
        rec["group"] = list(self.groups).index(sig) + 1
        self.groups[sig].examples.append(rec)
        if log is not None:
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if on_finding is not None:
            on_finding(rec)


def _make_targets(opts: Options, workdir: str, names) -> list:
    out = []
    for name in names:
        if name == "codecs":
            out.append(CodecsTarget(opts.seed, opts.roundtrip_every, opts.scapy_every))
        elif name == "snoop":
            out.append(SnoopTarget())
        elif name == "paravirt":
            out.append(ParavirtTarget())
        elif name == "tshark":
            out.append(TsharkTarget(workdir, opts.tshark_timeout))
        elif name == "ibsim":
            out.append(IbsimTarget(workdir, opts.ibsim_timeout, opts.allow_network_exposure))
        else:
            raise MadpipeError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    return out


class _Worker:
    """What a process needs to judge batches: the mutator and the in-process targets."""

    def __init__(self, opts: Options, corpus: Corpus, names, workdir: str):
        self.mutator = Mutator(corpus, opts.seed)
        self.workdir = workdir
        self.keep = opts.keep
        self.targets = _make_targets(opts, workdir, names)

    def run_batch(self, start: int, count: int):
        cases = self.mutator.batch(start, count)
        cfg = batch_config(self.mutator.seed, start // BATCH)
        ctx = BatchContext(cases, self.workdir)
        groups: dict = {}
        for target in self.targets:
            _collect(groups, target.check(cases, cfg, ctx), self.keep)
        stats = {t.name: Counter(t.stats) for t in self.targets}
        for t in self.targets:
            t.stats.clear()
        return start, count, stats, groups

    def close(self):
        for t in self.targets:
            if hasattr(t, "close"):
                t.close()


def _collect(groups: dict, findings, keep: int) -> None:
    """Count ``findings`` into ``groups``: {signature: [count, the first ``keep`` findings]}."""
    for f in findings:
        g = groups.setdefault(f.signature, [0, []])
        g[0] += 1
        if len(g[1]) < keep:
            g[1].append(f)


_W: _Worker | None = None


def _pool_init(opts, corpus, names, workdir):
    global _W
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    _W = _Worker(opts, corpus, names, workdir)


def _pool_batch(args):
    return _W.run_batch(*args)


def load_corpus(path: str | None) -> Corpus:
    return Corpus.builtin() if path is None else Corpus.from_path(path)


def run(opts: Options, reporter_factory=None, progress=None) -> Summary:
    """Run the fuzzer. ``reporter_factory(mutator) -> Reporter``; ``progress(cases, seconds, groups)``."""
    names = list(dict.fromkeys(opts.targets))
    for n in names:
        if n not in TARGETS:
            raise MadpipeError(f"unknown target {n!r}; targets: {', '.join(TARGETS)}")
    corpus = load_corpus(opts.corpus)
    mutator = Mutator(corpus, opts.seed)
    summary = Summary(corpus=corpus.source, corpus_digest=corpus.digest(), seeds=len(corpus.frames))
    reporter = reporter_factory(mutator) if reporter_factory else Reporter(mutator)
    workdir = tempfile.mkdtemp(prefix="madpipe-fuzz-")
    in_pool = [n for n in names if n != "ibsim"]
    parent_targets = []
    pool = None
    t0 = time.monotonic()
    try:
        if "ibsim" in names:
            parent_targets = _make_targets(opts, workdir, ["ibsim"])
        plan = _batches(opts)
        jobs = max(1, int(opts.jobs))
        if jobs > 1 and in_pool:
            # Kernels load once here, before the fork, so the workers do not each load them.
            _warm(in_pool)
            ctx = multiprocessing.get_context("fork")
            pool = ctx.Pool(jobs, _pool_init, (opts, corpus, in_pool, workdir))
            results = _ordered(pool, plan, jobs * 2, opts, t0)
        else:
            worker = _Worker(opts, corpus, in_pool, workdir) if in_pool else None
            results = (_local(worker, s, n) for s, n in within_time(plan, opts.seconds, t0))
        for start, count, stats, groups in results:
            if parent_targets:
                cases = mutator.batch(start, count)
                cfg = batch_config(opts.seed, start // BATCH)
                ctx_ = BatchContext(cases, workdir)
                for t in parent_targets:
                    _collect(groups, t.check(cases, cfg, ctx_), opts.keep)
                    stats[t.name] = Counter(t.stats)
                    t.stats.clear()
            summary.cases += count
            _merge(summary, stats, groups, opts.keep, reporter)
            summary.seconds = time.monotonic() - t0
            if progress is not None:
                progress(summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        for t in parent_targets:
            t.close()
        reporter.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = time.monotonic() - t0
    return summary


def _warm(names) -> None:
    for name in ("snoop", "paravirt"):
        if name in names:
            importlib.import_module(f"madpipe.pipeline.mlx4.{name}")


def _local(worker, start, count):
    if worker is None:
        return start, count, {}, {}
    return worker.run_batch(start, count)


def _batches(opts: Options):
    """(start, count) of each batch: aligned to BATCH so that a case's batch never depends on the run."""
    start = opts.start
    end = None if opts.count is None else opts.start + opts.count
    while end is None or start < end:
        stop = (start // BATCH + 1) * BATCH
        if end is not None:
            stop = min(stop, end)
        yield start, stop - start
        start = stop


def within_time(plan, seconds: float | None, t0: float):
    """The plan's items while fewer than ``seconds`` have passed since ``t0`` (all: None)."""
    for item in plan:
        if seconds is not None and time.monotonic() - t0 >= seconds:
            return
        yield item


def _ordered(pool, plan, depth: int, opts: Options, t0: float):
    """Results of pool batches in batch order, with at most ``depth`` batches in flight."""
    pending = []
    plan = within_time(plan, opts.seconds, t0)
    for item in plan:
        pending.append(pool.apply_async(_pool_batch, (item,)))
        if len(pending) >= depth:
            yield pending.pop(0).get()
    while pending:
        if opts.seconds is not None:
            # Out of time: take what finishes within it; the rest is dropped with the pool.
            pending[0].wait(max(0.0, opts.seconds - (time.monotonic() - t0)))
            if not pending[0].ready():
                return
        yield pending.pop(0).get()


def _merge(summary: Summary, stats, groups, keep: int, reporter: Reporter) -> None:
    for name, c in stats.items():
        summary.stats.setdefault(name, Counter()).update(c)
    for sig in sorted(groups, key=lambda s: min(f.case for f in groups[s][1]) if groups[s][1] else 0):
        count, examples = groups[sig]
        g = summary.groups.get(sig)
        if g is None:
            first = examples[0]
            g = summary.groups[sig] = Group(first.target, first.kind, first.severity, first.key)
        g.count += count
        for f in sorted(examples, key=lambda f: f.case):
            if len(g.examples) < keep:
                g.examples.append(reporter.record(f, list(summary.groups).index(sig) + 1))


# -- replay --------------------------------------------------------------------------------------

def replay(seed: int, index: int, targets, corpus_path: str | None = None, opts: Options | None = None):
    """Case ``index`` of ``seed`` again: (Cases of one, [Finding]) on the targets given.

    The stateful snoop target replays the batch from its first case to ``index`` (its state
    depends on them); the other targets judge the case alone.
    """
    opts = opts or Options(seed=seed)
    corpus = load_corpus(corpus_path)
    mutator = Mutator(corpus, seed)
    one = mutator.case(index)
    cfg = batch_config(seed, index // BATCH)
    workdir = tempfile.mkdtemp(prefix="madpipe-replay-")
    findings = []
    try:
        for name in targets:
            t = _make_targets(opts, workdir, [name])[0]
            try:
                if name == "snoop":
                    start = (index // BATCH) * BATCH
                    cases = mutator.batch(start, index - start + 1)
                    t.fabric = False
                else:
                    cases = mutator.batch(index, 1)
                    if name == "codecs":
                        t.roundtrip_every = 1
                        t.scapy_every = 1
                found = t.check(cases, cfg, BatchContext(cases, workdir))
                findings += [f for f in found if f.case == index]
            finally:
                if hasattr(t, "close"):
                    t.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return one, findings


__all__ = ["DEFAULT_TARGETS", "TARGETS", "Options", "Summary", "replay", "run"]
