"""The ``tshark`` fuzz target: the batch as an ERF capture through ``tshark``.

A crash (pinned to its frame by bisection), a hang (timeout) or a frame tshark calls malformed
or a dissector bug is a finding of severity ``tool``, grouped by tshark's message.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter

from madpipe.codecs.errors import MadpipeError
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.fuzz.findings import SEVERITY_TOOL, Finding
from madpipe.pipeline.fuzz.mutate.cases import Cases

TSHARK_FIELDS = ("frame.number", "_ws.malformed", "_ws.expert.message", "_ws.expert.severity", "_ws.col.Info",
                 "frame.protocols")
PA_ERROR = 8388608  # _ws.expert.severity of an error


def _normalize(text: str) -> str:
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", text)
    return re.sub(r"\d+", "N", text)


class TsharkTarget:
    name = "tshark"

    def __init__(self, workdir: str, timeout: float = 60.0):
        self.tshark = shutil.which("tshark")
        if self.tshark is None:
            raise MadpipeError("--target tshark: tshark is not installed (Debian package tshark)")
        self.confdir = os.path.join(workdir, "wireshark-config")
        os.makedirs(self.confdir, exist_ok=True)
        self.timeout = timeout
        self.stats = Counter()

    def _run(self, path: str):
        cmd = [self.tshark, "-n", "-r", path, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
               "-E", "aggregator=\x1f"]
        for f in TSHARK_FIELDS:
            cmd += ["-e", f]
        env = {**os.environ, "WIRESHARK_CONFIG_DIR": self.confdir}
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return None, "hang"
        if p.returncode < 0 or p.returncode not in (0, 2):
            return p, "crash"
        return p, None

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        out = []
        path = ctx.capture()
        p, trouble = self._run(path)
        self.stats["frames"] += len(cases)
        if trouble:
            return self._bisect(cases, ctx, trouble)
        records = getattr(ctx, "records", None)
        for line in p.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) < len(TSHARK_FIELDS) or not parts[0].isdigit():
                continue
            k = int(parts[0]) - 1
            if not 0 <= k < len(cases):
                continue
            malformed, messages, severities, info, protocols = parts[1:6]
            msgs = [m for m in messages.split("\x1f") if m]
            sev = [int(s) for s in severities.split("\x1f") if s.isdigit()]
            bug = [m for m in msgs if "issector bug" in m]
            if bug:
                kind, msg = "dissector-bug", bug[0]
            elif malformed or "Malformed Packet" in info or any(s >= PA_ERROR for s in sev):
                kind = "malformed"
                errs = [m for m, s in zip(msgs, sev) if s >= PA_ERROR] or msgs
                msg = errs[0] if errs else info
            else:
                continue
            self.stats[kind] += 1
            rec = records[k] if records is not None else decode_frame(cases.frame(k))
            madpipe = "madpipe decodes it cleanly" if rec is not None and "error" not in rec else "madpipe reports an error too"
            # Grouped by tshark's message, the protocols it went through and madpipe's verdict;
            # "Exception occurred" says little by itself, so the Info column's words join it there.
            what_info = re.sub(r"[\[(].*", "", _normalize(info)).strip() if "Exception" in msg else ""
            key = " | ".join(x for x in (_normalize(msg), what_info, protocols.replace("erf:", ""), madpipe) if x)
            out.append(Finding(self.name, kind, SEVERITY_TOOL, int(cases.index[k]), key,
                               f"tshark: {msg} (Info: {info[:100]}); {madpipe}",
                               data={"tshark_info": info, "tshark_expert": msgs}))
        return out

    def _bisect(self, cases: Cases, ctx, trouble: str) -> list[Finding]:
        """Find the frame that makes tshark crash or hang, by halving the batch."""
        lo, hi = 0, len(cases)
        path = os.path.join(ctx.workdir, "tshark-bisect.pcap")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            ctx.write_capture(path, cases, lo, mid)
            _, t = self._run(path)
            if t:
                hi = mid
            else:
                lo = mid
        ctx.write_capture(path, cases, lo, lo + 1)
        p, t = self._run(path)
        if not t:
            what = f"tshark {trouble}ed on the batch from case {int(cases.index[0])} but on no single frame of it"
            return [Finding(self.name, trouble, SEVERITY_TOOL, int(cases.index[lo]), "batch only", what)]
        detail = "" if p is None else f" (exit {p.returncode}: {(p.stderr or '').strip().splitlines()[-1:]})"
        self.stats[trouble] += 1
        return [Finding(self.name, trouble, SEVERITY_TOOL, int(cases.index[lo]), trouble,
                        f"tshark {'did not finish within %g s' % self.timeout if trouble == 'hang' else 'crashed'}"
                        f" on this frame{detail}")]
