"""``madpipe fuzz --target files``: whole files mutated from the bundled captures, a trace and a map
file, judged by :class:`~madpipe.pipeline.fuzz.targets.files.FilesTarget` through the CLI's commands.

::

    from madpipe.pipeline.cli.main import main
    from madpipe.pipeline.fuzz import files_runner
    summary = files_runner.run(files_runner.FilesOptions(seed=1, count=1000), main)

Case N of seed S is the same file in every run (:class:`~madpipe.pipeline.fuzz.mutate.file_ops.FileMutator`),
so ``--replay S:N`` shows it again; every finding kept is minimised first (its edits dropped one at
a time while the finding stays) and, with ``-w DIR``, written to DIR as the file that shows it.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from madpipe.pipeline.fuzz.findings import Group
from madpipe.pipeline.fuzz.mutate.file_ops import FileMutator
from madpipe.pipeline.fuzz.mutate.file_seeds import seeds as make_seeds
from madpipe.pipeline.fuzz.runner import Summary, within_time
from madpipe.pipeline.fuzz.targets.files import FilesTarget
from madpipe.pipeline.kernels import jit

BATCH = 32


@dataclass
class FilesOptions:
    seed: int = 0
    count: int | None = 1000
    seconds: float | None = None
    start: int = 0
    jobs: int = 1
    keep: int = 3
    hang_seconds: float = 20.0
    report_every: int = 64
    write: str | None = None  # a directory for the minimised files of kept findings, and findings.jsonl
    targets: tuple = ("files",)  # for the summary printers the frame targets share


class _Worker:
    def __init__(self, opts: FilesOptions, command, workdir: str):
        self.seeds = make_seeds()
        self.mutator = FileMutator(self.seeds, opts.seed)
        self.target = FilesTarget(self.seeds, command, workdir, opts.hang_seconds, opts.report_every)
        self.opts = opts

    def run_batch(self, start: int, count: int):
        groups: dict = {}
        for index in range(start, start + count):
            which, edits = self.mutator.case(index)
            for f in self.target.check(index, self.seeds[which], self.mutator.build(which, edits)):
                g = groups.setdefault(f.signature, [0, []])
                g[0] += 1
                if len(g[1]) < self.opts.keep:
                    kept = self.target.minimise(self.mutator, index, which, edits, f.signature)
                    g[1].append(self._example(f, index, which, edits, kept))
        stats = Counter(self.target.stats)
        self.target.stats.clear()
        return start, count, stats, groups

    def _example(self, f, index, which, edits, kept) -> dict:
        seed = self.seeds[which]
        rec = {"type": "finding", "target": f.target, "kind": f.kind, "severity": f.severity, "what": f.what,
               "key": f.key, "seed": self.opts.seed, "case": index, "replay": f"{self.opts.seed}:{index}",
               "seed_file": seed.name, "edits": [e.note for e in edits], "minimal_edits": [e.note for e in kept]}
        rec.update(f.data)
        if self.opts.write:
            name = f"case-{self.opts.seed}-{index}{seed.suffix}"
            with open(os.path.join(self.opts.write, name), "wb") as out:
                out.write(self.mutator.build(which, kept))
            rec["file"] = os.path.join(self.opts.write, name)
        return rec


_W: _Worker | None = None


def _pool_init(opts, command, workdir):
    global _W
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    _W = _Worker(opts, command, workdir)


def _pool_batch(item):
    assert _W is not None
    return _W.run_batch(*item)


def _plan(opts: FilesOptions):
    start = opts.start
    end = None if opts.count is None else opts.start + opts.count
    while end is None or start < end:
        n = BATCH if end is None else min(BATCH, end - start)
        yield start, n
        start += n


def run(opts: FilesOptions, command, progress=None, on_finding=None) -> Summary:
    """Run the files target over ``opts.count`` cases (or ``opts.seconds``), ``command`` being the
    CLI's ``main``. ``progress(summary)`` after each batch; ``on_finding(record)`` per kept finding."""
    seeds = make_seeds()  # here too: a checkout without the bundled captures fails before any worker
    _compiled_kernels()
    digest = hashlib.sha256(b"".join(s.data for s in seeds)).hexdigest()[:12]
    summary = Summary(corpus="bundled captures", corpus_digest=digest, seeds=len(seeds))
    if opts.write:
        os.makedirs(opts.write, exist_ok=True)
    log = open(os.path.join(opts.write, "findings.jsonl"), "w") if opts.write else None
    workdir = tempfile.mkdtemp(prefix="madpipe-fuzz-files-")
    t0 = time.monotonic()
    pool = None
    try:
        if opts.jobs > 1:
            pool = multiprocessing.get_context("fork").Pool(opts.jobs, _pool_init, (opts, command, workdir))
            results = pool.imap(_pool_batch, within_time(_plan(opts), opts.seconds, t0))
        else:
            worker = _Worker(opts, command, workdir)
            results = (worker.run_batch(s, n) for s, n in within_time(_plan(opts), opts.seconds, t0))
        for _start, count, stats, groups in results:
            summary.cases += count
            summary.stats.setdefault("files", Counter()).update(stats)
            for sig, (n, examples) in groups.items():
                g = summary.groups.get(sig)
                if g is None:
                    g = summary.groups[sig] = Group(*sig[:2], "bug", sig[2])
                g.count += n
                for rec in examples:
                    if len(g.examples) < opts.keep:
                        summary.keep_example(sig, rec, log, on_finding)
            summary.seconds = time.monotonic() - t0
            if progress is not None:
                progress(summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if log is not None:
            log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = time.monotonic() - t0
    return summary


def _compiled_kernels() -> None:
    """A run is a large job made of small files: the kernels as a large job runs them (built ahead
    of time, once), decided before the workers fork, rather than plain Python for each small file."""
    jit.plan_for_inputs([], small=0)
    jit.resolve()


def replay(seed: int, index: int, command, hang_seconds: float = 20.0):
    """Case ``index`` of ``seed`` again: (seed file, edits, minimal edits per finding, the file, findings)."""
    seeds = make_seeds()
    _compiled_kernels()
    mutator = FileMutator(seeds, seed)
    which, edits = mutator.case(index)
    workdir = tempfile.mkdtemp(prefix="madpipe-replay-files-")
    try:
        target = FilesTarget(seeds, command, workdir, hang_seconds, report_every=1)
        findings = target.check(index, seeds[which], mutator.build(which, edits))
        minimal = [target.minimise(mutator, index, which, edits, f.signature) for f in findings]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return seeds[which], edits, minimal, mutator.build(which, edits), findings
