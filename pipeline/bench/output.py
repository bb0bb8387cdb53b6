"""What ``madpipe bench`` prints: the figures as a table with each one's ratio to its baseline, then
the throughput targets checked on them; or both as JSON Lines (targets have a ``target`` key).
"""
from __future__ import annotations

import os
import platform

from madpipe.pipeline.bench.runner import Bench, format_rate
from madpipe.pipeline.decode.output import jsonl
from madpipe.pipeline.kernels import jit


def print_json(bench: Bench, out) -> None:
    for fig in bench.figures:
        jsonl(fig.as_json(bench.ratio(fig)), out)
    for target in bench.targets():
        jsonl(target, out)


def print_text(bench: Bench, out) -> None:
    machine = f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}"
    out.write(f"madpipe bench: n={bench.n}, repeat={bench.repeat}, subset={bench.subset}, seed={bench.seed}; "
              f"{machine}; kernels: {jit.backend()}\n")
    out.write(f"{'group':<9} {'what':<44} {'items':>9} {'rate/s':>8} {'median s':>10} {'min-max s':>17}  "
              "vs baseline\n")
    for fig in bench.figures:
        ratio = bench.ratio(fig)
        rel = "baseline" if ratio is None else f"{ratio:.3g}x"
        out.write(f"{fig.group:<9} {fig.name:<44} {fig.items:>9} {format_rate(fig.rate):>8} {fig.median:>10.4f} "
                  f"{min(fig.times):>8.4f}-{max(fig.times):<8.4f}  {rel}\n")
    targets = bench.targets()
    if targets:
        scale = "" if bench.n == 1_000_000 else f"; they are set for the default --n 1000000, this run has {bench.n}"
        out.write(f"\ntargets (medians of this run{scale})\n")
        for t in targets:
            if "ratio" in t:
                got = f"{_ratio_text(t['ratio'], t['at_least'])}x, at least {t['at_least']:.3g}x"
            elif "rate_per_s" in t:
                got = f"{format_rate(t['rate_per_s'])}/s, at least {format_rate(t['at_least_per_s'])}/s"
            else:
                got = f"{t['seconds']:.3f} s, at most {t['at_most']:g} s"
            out.write(f"  {t['target']:<52} {got:<26} {'met' if t['met'] else 'NOT MET'}\n")


def _ratio_text(ratio: float, least: float) -> str:
    """``ratio`` to three significant digits, more when those would round a miss up to the line
    (9.996 is "9.996", not "10", beside "at least 10x ... NOT MET")."""
    for digits in range(3, 10):
        text = f"{ratio:.{digits}g}"
        if (float(text) >= least) == (ratio >= least):
            return text
    return repr(ratio)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
