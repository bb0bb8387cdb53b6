"""The ``files`` fuzz target: whole input files, mutated from the seeds of
:mod:`~madpipe.pipeline.fuzz.mutate.file_seeds`, through the commands a user runs on them.

A capture goes through ``madpipe decode -T json``, ``madpipe decode`` (text), ``madpipe snoop -T
json``, ``madpipe diff SEED CASE`` and, one case in ``report_every``, ``madpipe report``; a
``madpipe paravirt`` trace through ``paravirt -T json`` and ``paravirt -w``; a ``--pkey-map`` file
through ``snoop``, ``diff`` and ``paravirt`` with ``--host``/``--vfs``. All in-process, through
``command(argv) -> int`` (the CLI's ``main``, which the runner is handed: no library module
imports the CLI). A finding is an exception out of a command, a command that runs longer than
``hang_seconds``, an exit status other than 0, 1 and 2, a traceback on stderr, an exit status 2
whose error is not one line, or decode and snoop disagreeing about the file: the frames each
read, the records each skipped and why, whether the file ended early.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sys
from collections import Counter

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.fuzz.findings import SEVERITY_BUG, Finding, exc_text, where_raised
from madpipe.pipeline.fuzz.mutate.file_ops import Edit, FileMutator
from madpipe.pipeline.fuzz.mutate.file_seeds import SeedFile

TARGET = "files"
HOST_LID = "0x2"  # a LID of the opensm seed's fabric


class Hang(BaseException):
    """Raised by the alarm inside a command that ran too long (not an Exception: nothing catches it)."""


def _alarm(_signum, _frame):
    raise Hang()


class FilesTarget:
    name = TARGET

    def __init__(self, seeds: list[SeedFile], command, workdir: str, hang_seconds: float = 20.0,
                 report_every: int = 64):
        self.seeds = seeds
        self.command = command
        self.workdir = workdir
        self.hang_seconds = hang_seconds
        self.report_every = report_every
        self.stats: Counter = Counter()
        self.paths = {}
        for s in seeds:  # the unmutated seeds, for diff's other side and the map's capture and trace
            self.paths[s.name] = os.path.join(workdir, f"seed-{os.getpid()}-{s.name}")
            with open(self.paths[s.name], "wb") as f:
                f.write(s.data)

    # -- one command ------------------------------------------------------------------------------
    def run(self, argv: list[str], call=None) -> tuple[object, str, str]:
        """(exit status or the exception raised, stdout, stderr) of ``command(argv)``, or of
        ``call()`` (a library function: returning is status 0, a MadpipeError status 2)."""
        out, err = io.StringIO(), io.StringIO()
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self.hang_seconds)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                if call is None:
                    status: object = self.command(argv)
                else:
                    try:
                        call()
                        status = 0
                    except MadpipeError as exc:
                        print(f"madpipe {' '.join(argv)}: {exc}", file=sys.stderr)
                        status = 2
        except SystemExit as exc:  # argparse's way out
            status = exc.code if isinstance(exc.code, int) else 2
        except Hang as exc:
            status = exc
        except Exception as exc:
            status = exc
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        self.stats["commands"] += 1
        return status, out.getvalue(), err.getvalue()

    # -- one case ---------------------------------------------------------------------------------
    def check(self, index: int, seed: SeedFile, data: bytes) -> list[Finding]:
        path = os.path.join(self.workdir, f"case-{os.getpid()}{seed.suffix}")
        with open(path, "wb") as f:
            f.write(data)
        self.stats[f"{seed.kind}s"] += 1
        if seed.kind == "capture":
            runs = self._capture(index, path)
        elif seed.kind == "trace":
            runs = {"paravirt -T json": self.run(["paravirt", "-r", path, "-T", "json"]),
                    "paravirt -w": self.run(["paravirt", "-r", path, "-q", "-w", path + ".out"])}
        else:
            cap, trace = self.paths["opensm-ns-le.pcap"], self.paths["trace.jsonl"]
            host = ["--host", HOST_LID, "--vfs", "2", "--pkey-map", path]
            runs = {"snoop --pkey-map": self.run(["snoop", "-r", cap, *host]),
                    "diff --pkey-map": self.run(["diff", cap, cap, *host]),
                    "paravirt --pkey-map": self.run(["paravirt", "-r", trace, "-q", "--vfs", "2", "--pkey-map", path])}
        found = []
        for what, (status, _, err) in runs.items():
            found += _status_findings(index, seed, what, status, err)
        if seed.kind == "capture" and not found:
            found += _agreement(index, seed, runs)
            status = runs["decode -T json"][0]
            self.stats[{0: "read whole", 1: "cut short", 2: "refused"}.get(status, "other")] += 1
        return found

    def _capture(self, index: int, path: str) -> dict:
        runs = {"decode -T json": self.run(["decode", "-r", path, "-T", "json"]),
                "decode": self.run(["decode", "-r", path]),
                "snoop -T json": self.run(["snoop", "-r", path, "-T", "json"]),
                "diff": self.run(["diff", self.paths["opensm-ns-le.pcap"], path, "-T", "json"])}
        if self.report_every and index % self.report_every == 0:
            runs["report"] = self.run(["report", path, "-w", path + ".html"])
            self.stats["reports"] += 1
        else:  # what the report reads and counts, without matplotlib's second of drawing
            from madpipe.pipeline.fabric.report import report_data

            runs["report (data)"] = self.run(["report (data)"], lambda: report_data(path))
        return runs

    # -- minimising -------------------------------------------------------------------------------
    def minimise(self, mutator: FileMutator, index: int, which: int, edits: list[Edit],
                 signature) -> list[Edit]:
        """The fewest of ``edits`` (dropped one at a time, last first) that still give ``signature``."""
        keep = list(edits)
        for i in reversed(range(len(keep))):
            if len(keep) == 1:
                break
            trial = keep[:i] + keep[i + 1:]
            got = self.check(index, self.seeds[which], mutator.build(which, trial))
            if any(f.signature == signature for f in got):
                keep = trial
        return keep


def _status_findings(index: int, seed: SeedFile, what: str, status, err: str) -> list[Finding]:
    def finding(kind, key, text):
        return [Finding(TARGET, kind, SEVERITY_BUG, index, key, f"{text} ({seed.name})", frame=False,
                        data={"command": what, "seed_file": seed.name})]

    if isinstance(status, Hang):
        return finding("hang", what, f"madpipe {what} ran past the time limit")
    if isinstance(status, BaseException):
        where = where_raised(status)
        return finding("crash", f"{what}: {type(status).__name__} at {where}",
                       f"madpipe {what} raised {exc_text(status)} at {where}")
    if status not in (0, 1, 2):
        return finding("exit status", f"{what}: exit {status}", f"madpipe {what} exited with status {status}")
    if "Traceback (most recent call last)" in err:
        return finding("traceback", what, f"madpipe {what} printed a traceback on stderr")
    lines = [ln for ln in err.splitlines() if ln.startswith("madpipe ")]
    if status == 2 and len(lines) != 1:
        return finding("error lines", what, f"madpipe {what} exited 2 with {len(lines)} error lines: {err[:200]!r}")
    return []


SUMMARY_READ = re.compile(r": (\d+) frames read")


def _agreement(index: int, seed: SeedFile, runs: dict) -> list[Finding]:
    """decode and snoop read the same file the same way: frames, skips and why, where it ended."""
    (dj, dj_out, dj_err), (dt, _, dt_err), (sj, sj_out, _) = (runs[k] for k in ("decode -T json", "decode",
                                                                                 "snoop -T json"))
    problems = []
    if len({dj, dt, sj}) != 1:
        problems.append(("exit status", f"exit status: decode -T json {dj}, decode {dt}, snoop {sj}"))
    if dj != 2 and sj != 2:
        records = [json.loads(line) for line in dj_out.splitlines()]
        skipped = Counter(r["skipped"] for r in records if "skipped" in r)
        summaries = [r for r in map(json.loads, sj_out.splitlines()) if r.get("type") == "summary"]
        if not summaries:
            return [Finding(TARGET, "disagree", SEVERITY_BUG, index, "no snoop summary",
                            f"snoop -T json exited {sj} without a summary record ({seed.name})", frame=False)]
        summary = summaries[-1]
        read_text = SUMMARY_READ.search(dt_err)
        if read_text is None or int(read_text.group(1)) != len(records):
            problems.append(("frames text/json", f"decode reads {len(records)} frames as JSON, "
                             f"{read_text.group(1) if read_text else '?'} as text"))
        if summary.get("frames", 0) + sum(summary["skipped"].values()) != len(records):
            problems.append(("frames", f"decode reports {len(records)} frames, snoop {summary['frames']} "
                             f"and {sum(summary['skipped'].values())} skipped"))
        if skipped != Counter(summary["skipped"]):
            problems.append(("skip reasons", f"skipped: decode {dict(skipped)}, snoop {summary['skipped']}"))
        if (dj == 1) != (summary["file_error"] is not None):
            problems.append(("file error", f"decode exit {dj}, snoop's file_error {summary['file_error']!r}"))
        if dj == 1 and dj_err.splitlines()[-1].split(": ", 2)[-1] != summary["file_error"]:
            problems.append(("file error words", f"decode: {dj_err.splitlines()[-1]!r}, snoop: "
                             f"{summary['file_error']!r}"))
    return [Finding(TARGET, "disagree", SEVERITY_BUG, index, key, f"{text} ({seed.name})", frame=False,
                    data={"seed_file": seed.name}) for key, text in problems[:1]]
