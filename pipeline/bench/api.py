"""`madpipe bench --what api`: the public Python calls as a notebook or a test calls them.

- snoop: ``snoop.smp_snoop`` (checks, result arrays, kernel) on the SM traffic of the snoop
  group and on SubnSets that each change their block (every MAD an event on the master and,
  profile new, on the VFs), against the memory-touch kernel over the same MADs (the cache lines
  smp_snoop reads; the two-line touch too, for the figures of earlier runs);
  ``slave_events.dense()`` of the latter, what the compact events save.
- paravirt: ``paravirt.rewrite`` into a new array, into a caller's buffer (``out=``) and in
  place, against ``np.copy`` (a new array, as rewrite without ``out=`` makes) and a copy into a
  buffer whose pages are mapped (``np.copyto``).
- events: ``madpipe snoop``'s text and JSON Lines of a capture of changing SubnSets, written into
  a pipe that another process drains, against writing the same bytes, prepared beforehand,
  into the same pipe; and ``madpipe snoop -T json`` as a process against tshark's plain decode
  of the same file (a process; when tshark is installed).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout

import numpy as np

from madpipe.pipeline.bench import workload
from madpipe.pipeline.bench.targets import TOUCH, TOUCH_TWO

#: Events in the events figures at most (a 1M-event JSON output is ~700 MB).
MAX_EVENTS = 1_000_000


def api_group(bench) -> None:
    _snoop_calls(bench)
    _rewrite_calls(bench)
    _event_output(bench)


def _snoop_calls(bench) -> None:
    from madpipe.pipeline.bench import kernels as kernels_bench
    from madpipe.pipeline.mlx4 import snoop

    for label, (mads, port_num, status) in (("SM traffic", workload.sm_mads(bench.n, bench.seed)),
                                            ("every Set changes", workload.changing_sets(bench.n, bench.seed))):
        kernels_bench.touch_lines(mads[:2])  # compile or load outside the timing
        kernels_bench.touch_snooped(mads[:2])
        base = f"{TOUCH}, {label}"
        bench.measure("api", base, bench.n, lambda mads=mads: kernels_bench.touch_snooped(mads))
        bench.measure("api", f"{TOUCH_TWO}, {label}", bench.n, lambda mads=mads: kernels_bench.touch_lines(mads),
                      baseline=base)
        for profile in ("new", "3.7"):
            def call(upto=bench.n, profile=profile, mads=mads, port_num=port_num, status=status):
                cache, v2p = snoop.init_pkeys(num_vfs=4, profile=profile)
                return snoop.smp_snoop(cache, v2p, mads[:upto], port_num[:upto], status[:upto], num_vfs=4,
                                       profile=profile)
            call(8)
            bench.measure("api", f"snoop.smp_snoop, {profile}, {label}", bench.n, call, baseline=base)
        result = call(profile="new")
        bench.measure("api", f"slave_events.dense(), {label}", bench.n, result.slave_events.dense,
                      baseline=base, note=f"{len(result.slave_rows)} MADs with VF events")


def _rewrite_calls(bench) -> None:
    from madpipe.pipeline.mlx4 import paravirt, snoop

    mbox, transition, slave, qpn = workload.qp_commands(bench.n, bench.seed)
    _, v2p = snoop.init_pkeys(num_vfs=8, profile="3.7")
    kw = dict(base_proxy_sqpn=0x48, profile="3.7")
    new_array = "np.copy (a new array)"
    bench.measure("api", new_array, bench.n, mbox.copy, unit="mailboxes")
    buffer = np.empty_like(mbox)
    np.copyto(buffer, mbox)  # its pages mapped before the timing, as a reused buffer's are
    mapped = "np.copyto (mapped buffer)"
    bench.measure("api", mapped, bench.n, lambda: np.copyto(buffer, mbox), unit="mailboxes")
    paravirt.rewrite(mbox[:4], transition[:4], slave[:4], qpn[:4], v2p, **kw)
    bench.measure("api", "paravirt.rewrite (new output)", bench.n,
                  lambda: paravirt.rewrite(mbox, transition, slave, qpn, v2p, **kw),
                  unit="mailboxes", baseline=new_array)
    bench.measure("api", "paravirt.rewrite(out=buffer)", bench.n,
                  lambda: paravirt.rewrite(mbox, transition, slave, qpn, v2p, out=buffer, **kw),
                  unit="mailboxes", baseline=mapped)
    bench.measure("api", "paravirt.rewrite, one transition", bench.n,
                  lambda: paravirt.rewrite(mbox, "INIT2RTR", 3, qpn, v2p, out=buffer, **kw),
                  unit="mailboxes", baseline=mapped, note="INIT2RTR, slave 3, out=buffer")
    work = mbox.copy()
    bench.measure("api", "paravirt.rewrite_inplace", bench.n,
                  lambda: paravirt.rewrite_inplace(work, transition, slave, qpn, v2p, **kw),
                  unit="mailboxes", baseline=mapped)


def _event_output(bench) -> None:
    from madpipe.pipeline.fabric import snoop as fabric_snoop
    from madpipe.pipeline.fabric.output import print_json, print_text

    events = min(bench.n, MAX_EVENTS)
    tmp = tempfile.mkdtemp(prefix="madpipe-bench-")
    try:
        path = os.path.join(tmp, "changing.pcap")
        mads, _, _ = workload.changing_sets(events, bench.seed)
        workload.write_capture(path, workload.mad_frames(mads, ports=1))
        result = fabric_snoop.snoop_capture(path)
        for fmt, printer in (("text", print_text), ("json", print_json)):
            with tempfile.TemporaryFile() as f:  # the bytes, once, to size the figure and time the baseline
                _write_to(f, printer, result)
                f.seek(0)
                prepared = np.fromfile(f, np.uint8)
            base = f"prepared {fmt} bytes into a pipe"
            bench.measure("api", base, len(prepared), lambda prepared=prepared: _into_pipe(prepared.data),
                          unit="bytes", repeat=min(bench.repeat, 3))
            bench.measure("api", f"snoop -T {fmt} output into a pipe", len(prepared),
                          lambda printer=printer: _into_pipe(printer, result), unit="bytes", baseline=base,
                          repeat=min(bench.repeat, 3), note=f"{events} events, every Set changes")
        tshark = shutil.which("tshark")
        if tshark:
            base = "tshark plain, every Set changes (a process)"
            bench.measure("api", base, events,
                          lambda: subprocess.run([tshark, "-n", "-r", path], stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL, check=True),
                          unit="frames", repeat=min(bench.repeat, 3))
            from madpipe.pipeline.bench.runner import process_env

            command = [sys.executable, "-m", "madpipe.pipeline.cli.main", "snoop", "-r", path, "-T", "json"]
            bench.measure("api", "madpipe snoop -T json, a process", events,
                          lambda: subprocess.run(command, stdout=subprocess.DEVNULL, check=True,
                                                 env=process_env()),
                          unit="frames", baseline=base, repeat=min(bench.repeat, 3))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_to(f, printer, result) -> None:
    """The printer's output as `madpipe snoop` writes it to a stdout on file ``f``."""
    with open(f.fileno(), "w", closefd=False) as text, redirect_stdout(text):
        printer(result, sys.stdout)
        sys.stdout.flush()


def _into_pipe(what, *args) -> None:
    """Bytes (a buffer), or a printer's output as on a stdout, into a pipe `cat` drains."""
    drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        if callable(what):
            _write_to(drain.stdin, what, *args)
        else:
            drain.stdin.write(what)
            drain.stdin.flush()
    finally:
        drain.stdin.close()
        drain.wait()
