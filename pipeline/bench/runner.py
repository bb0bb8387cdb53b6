"""`madpipe bench`: throughput of every stage, each as a ratio to a baseline measured in the same run.

Groups and their baselines:
- snoop: a memory-touch kernel reading the cache lines of each 256-byte MAD the snoop reads
  (header and P_Key block: three lines, as numpy lays rows out) is the physical limit; the numba kernel (both profiles), the
  pure-Python reference, construct per MAD and scapy per MAD are measured against it.
- paravirt: a plain memory copy of the mailboxes is the baseline for the kernels in place and out
  of place, and for the reference.
- capture: reading the file's bytes is the baseline for ingest into batches, `madpipe snoop` end
  to end (in this process, output written to /dev/null, kernels loaded before the timing), the
  fabric snoop without output and its object-per-SMP reference, `madpipe decode -T json` with and
  without its fast path, and tshark's decode (when installed; a process per run, so its start-up,
  ~0.25 s, is in its figure: on the --subset file, and for plain decode on the whole file too,
  next to `madpipe snoop` run as a process on the whole file, start-up included).
- api: the public Python calls (smp_snoop, paravirt.rewrite with and without out=, the event
  writers of `madpipe snoop`) against the same baselines: :mod:`madpipe.pipeline.bench.api`.
- startup: wall time of a small `madpipe snoop` run with the kernels as plain Python (the
  baseline), ahead of time, with numba's JIT from a warm cache and compiling cold (the difference
  is the JIT compile time), and the ahead-of-time build a first large job pays once.

The kernels run the way this process decided (``jit.backend()``, printed in the header): ahead of
time unless numba's JIT is asked for (``MADPIPE_JIT=1``) or the build failed.

Slow ways (reference, construct, scapy, decode, tshark) run on a subset, reported as a rate.
Every figure is the median of ``repeat`` runs with the min and max. A ratio to a baseline is the
median of pairs: each run of the figure right after a run of its baseline (see ``measure``);
a figure run once is compared by its rate with the baseline's median.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from madpipe.pipeline.bench import workload
from madpipe.pipeline.bench.targets import RATE_TARGETS, SMALL_JOB, TARGETS, TOUCH, TOUCH_TWO

GROUPS = ("snoop", "paravirt", "capture", "startup", "api")

@dataclass
class Figure:
    group: str
    name: str
    items: int  # how many MADs, mailboxes or frames one run handles
    unit: str
    times: list[float] = field(default_factory=list)
    baseline: str | None = None  # name of the figure in the same group this one is compared to
    note: str = ""
    fn: object = field(default=None, repr=False)  # what one run calls, to run it again as a baseline
    pair_ratios: list[float] = field(default_factory=list)  # this rate / the baseline's, run by run

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rate(self) -> float:
        return self.items / self.median if self.median > 0 else float("inf")

    def as_json(self, ratio: float | None) -> dict:
        return {"group": self.group, "name": self.name, "items": self.items, "unit": self.unit,
                "median_s": self.median, "min_s": min(self.times), "max_s": max(self.times),
                "rate_per_s": self.rate, "baseline": self.baseline, "ratio_to_baseline": ratio,
                "pairs": len(self.pair_ratios), "note": self.note}


class Bench:
    def __init__(self, n: int, repeat: int, progress=None, subset: int = 20_000, seed: int = 1):
        self.n = n
        self.repeat = repeat
        self.subset = min(subset, n)
        self.seed = seed
        self.figures: list[Figure] = []
        self.progress = progress or (lambda text: None)

    def measure(self, group, name, items, fn, *, unit="MADs", baseline=None, repeat=None,
                note="") -> Figure:
        """Time ``fn`` ``repeat`` times. With a baseline and more than one run, each run follows a
        run of the baseline's own call, and the figure's ratio is the median of these pairs'
        ratios: load that comes and goes then counts against both sides of a pair alike, where
        the baseline's runs, all made earlier, could have met another machine."""
        fig = Figure(group, name, items, unit, baseline=baseline, note=note, fn=fn)
        base = self.figure(group, baseline) if baseline else None
        runs = repeat or self.repeat
        paired = base is not None and base.fn is not None and runs > 1
        for i in range(runs):
            self.progress(f"{group}: {name} ({i + 1}/{runs})")
            if paired:
                t0 = time.perf_counter()
                base.fn()
                base_time = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn()
            fig.times.append(time.perf_counter() - t0)
            if paired:
                fig.pair_ratios.append((items * base_time) / (base.items * fig.times[-1])
                                       if fig.times[-1] > 0 else float("inf"))
        self.figures.append(fig)
        return fig

    def ratio(self, fig: Figure) -> float | None:
        """The figure's rate over its baseline's: the median of its pairs when it has them."""
        if fig.baseline is None:
            return None
        if fig.pair_ratios:
            return statistics.median(fig.pair_ratios)
        base = next(f for f in self.figures if f.group == fig.group and f.name == fig.baseline)
        return fig.rate / base.rate

    def figure(self, group: str, name: str) -> Figure | None:
        return next((f for f in self.figures if f.group == group and f.name == name), None)

    def targets(self) -> list[dict]:
        """TARGETS and SMALL_JOB checked on this run's figures (those it measured)."""
        out = []
        for what, group, name, other, least in TARGETS:
            fig, base = self.figure(group, name), self.figure(group, other)
            if fig and base:
                ratio = self.ratio(fig) if fig.baseline == other else fig.rate / base.rate
                out.append({"target": what, "ratio": ratio, "at_least": least, "met": ratio >= least})
        for what, group, name, least in RATE_TARGETS:
            fig = self.figure(group, name)
            if fig:
                out.append({"target": what, "rate_per_s": fig.rate, "at_least_per_s": least,
                            "met": fig.rate >= least})
        what, group, name, most = SMALL_JOB
        fig = self.figure(group, name)
        if fig:
            out.append({"target": what, "seconds": fig.median, "at_most": most, "met": fig.median <= most})
        return out

    # -- groups ---------------------------------------------------------------------------
    def snoop(self) -> None:
        from madpipe.codecs import mad as madc
        from madpipe.codecs import smp as smpc
        from madpipe.pipeline.bench import kernels as kernels_bench
        from madpipe.pipeline.mlx4 import snoop

        mads, port_num, status = workload.sm_mads(self.n, self.seed)
        base = TOUCH
        kernels_bench.touch_lines(mads[:2])  # compile outside the timing
        kernels_bench.touch_snooped(mads[:2])
        self.measure("snoop", base, self.n, lambda: kernels_bench.touch_snooped(mads))
        self.measure("snoop", TOUCH_TWO, self.n, lambda: kernels_bench.touch_lines(mads), baseline=base)
        for profile in ("new", "3.7"):
            def run(upto=self.n, profile=profile):
                cache, v2p = snoop.init_pkeys(num_vfs=4, profile=profile)
                snoop.smp_snoop(cache, v2p, mads[:upto], port_num[:upto], status[:upto], num_vfs=4,
                                profile=profile)
            run(8)  # compile (or load from the cache) outside the timing
            self.measure("snoop", f"numba kernel, profile {profile}", self.n, run, baseline=base)
        sub = self.subset
        cache, v2p = snoop.init_pkeys(num_vfs=4)
        self.measure("snoop", "pure-Python reference", sub,
                     lambda: snoop.smp_snoop_reference(cache, v2p, mads[:sub], port_num[:sub], status[:sub],
                                                       num_vfs=4, profile="new"),
                     baseline=base, repeat=1)
        smp_s = smpc.attribute_schema(smpc.IB_SMP_ATTR_PKEY_TABLE, compiled=True)
        from madpipe.codecs.compiled import compiled
        hdr_s = compiled(smpc.SMP)
        few = min(sub, 5000)
        raw = [mads[i].tobytes() for i in range(few)]

        def construct_snoop():
            table = [0] * 256
            for i, m in enumerate(raw):
                s = hdr_s.parse(m)
                h = s.hdr
                if (h.mgmt_class in (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
                        and h.method == madc.IB_MGMT_METHOD_SET and h.attr_id == smpc.IB_SMP_ATTR_PKEY_TABLE
                        and not status[i]):
                    keys = smp_s.parse(s.data).pkeys
                    first = (int(port_num[i]) - 1) * 128 + (h.attr_mod & 0xFFFF) * 32
                    if first + 32 <= 256:
                        for j, p in enumerate(keys):
                            table[first + j] = p
        self.measure("snoop", "construct per MAD (compiled)", few, construct_snoop, baseline=base, repeat=1)
        try:
            from scapy.packet import Raw  # noqa: F401

            from madpipe.codecs import layers  # noqa: F401  (scapy layers, when present)
        except ImportError:
            return
        scapy_few = min(sub, 2000)
        frames = [bytes(r) for r in workload.mad_frames(mads[:scapy_few])]

        def scapy_dissect():
            for f in frames:
                layers.LRH(f)
        self.measure("snoop", "scapy per MAD (dissect only)", scapy_few, scapy_dissect, baseline=base, repeat=1)

    def paravirt(self) -> None:
        from madpipe.pipeline.mlx4 import paravirt, snoop

        mbox, transition, slave, qpn = workload.qp_commands(self.n, self.seed)
        _, v2p = snoop.init_pkeys(num_vfs=8, profile="3.7")
        base = "memory copy"
        out = np.empty_like(mbox)
        np.copyto(out, mbox)  # fault the pages in outside the timing, as the kernels' buffers are
        self.measure("paravirt", base, self.n, lambda: np.copyto(out, mbox), unit="mailboxes")
        kw = dict(base_proxy_sqpn=0x48, profile="3.7")
        paravirt.rewrite(mbox[:4], transition[:4], slave[:4], qpn[:4], v2p, **kw)
        paravirt.rewrite_inplace(mbox[:4].copy(), transition[:4], slave[:4], qpn[:4], v2p, **kw)
        work = mbox.copy()
        self.measure("paravirt", "numba in place", self.n,
                     lambda: paravirt.rewrite_inplace(work, transition, slave, qpn, v2p, **kw),
                     unit="mailboxes", baseline=base)
        self.measure("paravirt", "numba out of place", self.n,
                     lambda: paravirt.rewrite(mbox, transition, slave, qpn, v2p, **kw),
                     unit="mailboxes", baseline=base)
        sub = self.subset
        self.measure("paravirt", "pure-Python reference", sub,
                     lambda: paravirt.rewrite_reference(mbox[:sub], transition[:sub], slave[:sub], qpn[:sub],
                                                        v2p, **kw),
                     unit="mailboxes", baseline=base, repeat=1)

    def capture(self) -> None:
        from madpipe.pipeline.fabric import reference as reference_fabric
        from madpipe.pipeline.fabric.snoop import snoop_capture
        from madpipe.pipeline.ingest.reader import Ingest

        tmp = tempfile.mkdtemp(prefix="madpipe-bench-")
        try:
            mads, _, _ = workload.sm_mads(self.n, self.seed)
            big = os.path.join(tmp, "big.pcap")
            workload.write_capture(big, workload.mad_frames(mads))
            small = os.path.join(tmp, "subset.pcap")
            workload.write_capture(small, workload.mad_frames(mads[:self.subset]))
            base = "read the file"

            def read_file():
                with open(big, "rb") as f:
                    while f.read(1 << 24):
                        pass
            self.measure("capture", base, self.n, read_file, unit="frames")

            def ingest():
                for batch in Ingest(big):
                    batch.mads()
            self.measure("capture", "ingest into batches + MADs", self.n, ingest, unit="frames", baseline=base)
            small_job = os.path.join(tmp, "warm.pcap")  # loads kernels and formatters outside the timing
            workload.write_capture(small_job, workload.mad_frames(mads[:2000]))
            for fmt in ("text", "json"):
                _snoop_quiet(small_job, fmt)
                self.measure("capture", f"madpipe snoop -T {fmt} (end to end)", self.n,
                             lambda fmt=fmt: _snoop_quiet(big, fmt), unit="frames", baseline=base)
            self.measure("capture", "snoop.snoop_capture (no output)", self.n, lambda: snoop_capture(big),
                         unit="frames", baseline=base)
            tshark = shutil.which("tshark")
            whole = "tshark plain, whole file (a process)"
            if tshark:
                self._tshark(tshark, "plain", big, self.n, base, whole)
            command = [sys.executable, "-m", "madpipe.pipeline.cli.main", "snoop", "-r", big]
            env = process_env()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True, env=env)  # writes the bytecode
            # Against tshark's run of the same file just before each of its runs (measure's pairs):
            # measured a minute apart, the two met different machines (this VM's speed drifts).
            self.measure("capture", "madpipe snoop, a process (+start-up)", self.n,
                         lambda: subprocess.run(command, stdout=subprocess.DEVNULL, check=True, env=env),
                         unit="frames", baseline=whole if tshark else base)
            sub = self.subset
            few = min(sub, 5000)
            fewer = os.path.join(tmp, "few.pcap")
            workload.write_capture(fewer, workload.mad_frames(mads[:few]))
            self.measure("capture", "reference_fabric (objects per SMP)", few,
                         lambda: reference_fabric.snoop_capture(fewer), unit="frames", baseline=base, repeat=1)
            _decode_json_quiet(small_job)
            self.measure("capture", "madpipe decode -T json", sub, lambda: _decode_json_quiet(small),
                         unit="frames", baseline=base, repeat=min(self.repeat, 3))
            self.measure("capture", "madpipe decode -T json, no fast path", few,
                         lambda: _decode_json_quiet(fewer, fast_json=False),
                         unit="frames", baseline=base, repeat=1)
            if tshark:
                self._tshark(tshark, "-T json", small, sub, base, "tshark -T json")
                self._tshark(tshark, "plain", small, sub, base, "tshark plain")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _tshark(self, tshark: str, mode: str, path: str, items: int, base: str, name: str) -> None:
        """tshark's decode of ``path`` ("-T json" or "plain") as the capture group's figure ``name``."""
        args = [tshark, "-n", "-r", path] + (["-T", "json"] if mode == "-T json" else [])
        self.measure("capture", name, items,
                     lambda: subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True),
                     unit="frames", baseline=base, repeat=min(self.repeat, 3))

    def api(self) -> None:
        from madpipe.pipeline.bench.api import api_group

        api_group(self)

    def startup(self) -> None:
        tmp = tempfile.mkdtemp(prefix="madpipe-bench-")
        try:
            mads, _, _ = workload.sm_mads(50, self.seed)
            path = os.path.join(tmp, "small.pcap")
            workload.write_capture(path, workload.mad_frames(mads))
            cmd = [sys.executable, "-m", "madpipe.pipeline.cli.main", "snoop", "-r", path]
            env = {k: v for k, v in process_env().items() if k not in ("MADPIPE_JIT", "NUMBA_DISABLE_JIT")}
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # bytecode
            base = "small job, kernels as Python"
            runs = ((base, {"MADPIPE_JIT": "0"}),
                    ("small job, kernels ahead of time", {"MADPIPE_JIT": "aot"}),
                    ("small job, numba JIT, warm cache", {"MADPIPE_JIT": "1"}),
                    ("small job, numba JIT, cold compile", {"MADPIPE_JIT": "1", "MADPIPE_NO_CACHE": "1"}))
            for name, extra in runs:
                run_env = dict(env, **extra)
                if "warm" in name or "ahead" in name:  # make sure the cache or the build exists first
                    subprocess.run(cmd, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   check=True)
                self.measure("startup", name, 1,
                             lambda run_env=run_env: subprocess.run(cmd, env=run_env, stdout=subprocess.DEVNULL,
                                                                    check=True),
                             unit="runs", baseline=None if name == base else base,
                             repeat=min(self.repeat, 3))
            # What the first large job after an install pays once: the ahead-of-time build.
            build_env = dict(env, MADPIPE_CACHE_DIR=os.path.join(tmp, "aot"))
            self.measure("startup", "ahead-of-time build (once per version)", 1,
                         lambda: subprocess.run([sys.executable, "-m", "madpipe.pipeline.kernels.aot", "--force"],
                                                env=build_env, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL, check=True),
                         unit="runs", baseline=base, repeat=1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def process_env() -> dict:
    """The environment for a timed ``madpipe`` process: as this one's, but free to write bytecode.
    With PYTHONDONTWRITEBYTECODE set (some sandboxes and images do) and a source checkout, every
    process would compile madpipe's modules again (~35 ms); an installed package has its bytecode
    from the install, and that is the start-up a user pays. One untimed run writes it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _snoop_quiet(path, fmt: str) -> None:
    """What `madpipe snoop -r path -T fmt` does, in this process: the fabric snoop, then its text or
    JSON Lines written to os.devnull as the command's stdout (so its event lines take the same
    binary path to the stream)."""
    from contextlib import redirect_stdout

    from madpipe.pipeline.fabric import snoop  # snoop.snoop_capture looked up at each call: tests swap it there
    from madpipe.pipeline.fabric.output import print_json, print_text

    with open(os.devnull, "w") as null, redirect_stdout(null):
        result = snoop.snoop_capture(path)
        (print_json if fmt == "json" else print_text)(result, sys.stdout)
        sys.stdout.flush()


def _decode_json_quiet(path, fast_json: bool = True) -> None:
    """What `madpipe decode -r path -T json` does, in this process, its output written to
    os.devnull: with its fast path (decode.json_lines) or every frame through decode_frame."""
    from madpipe.pipeline.decode import lines
    from madpipe.pipeline.decode.text import summary

    saved = lines.FAST_JSON
    lines.FAST_JSON = fast_json
    try:
        with open(os.devnull, "w") as null:
            counts, _ = lines.decode_capture(path, null, format="json")
            null.flush()
            summary(path, counts)
    finally:
        lines.FAST_JSON = saved


def format_rate(rate: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.3g}{suffix}"
    return f"{rate:.3g}"
