"""The ``opensm`` and ``diags`` fuzz targets: a malicious fabric answering the tools that trust it.

ibsim simulates the fabric, behind madpipe's relay (:class:`~madpipe.pipeline.sim.capture.SimCapture`,
in a private loopback-only network namespace); the relay's ``answer_hook`` rewrites the answers ibsim
sends to the tool under test with :class:`~madpipe.pipeline.fuzz.mutate.answers.AnswerMutator`.
Case N of seed S is one run of one tool: ``opensm --once`` on a fresh ibsim (its Sets change the
fabric), or one of ``ibnetdiscover``, ``smpquery`` (nodeinfo, portinfo, switchinfo, pkeys, nodedesc,
LID-routed or directed-route) and ``perfquery`` against a fabric opensm brought up unmutated first.

A run is judged (:mod:`~madpipe.pipeline.fuzz.targets.fabric_checks`): a crash (killed by a signal;
the core's backtrace by gdb names the crash site), a hang (no datagram for ``hang_seconds``, or no
end within ``tool_seconds``), a sanitizer report in its output, and for smpquery a wrong answer (a
printed value the answer it got does not say).
"""
from __future__ import annotations

import os
import re
import resource
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.fuzz.findings import SEVERITY_TOOL, Finding
from madpipe.pipeline.fuzz.mutate.answers import AnswerMutator, Edit, answer_key, apply_edits, attribute_name
from madpipe.pipeline.fuzz.mutate.rng import CaseRng
from madpipe.pipeline.fuzz.targets import fabric_checks as checks
from madpipe.pipeline.sim.capture import DEFAULT_PARTITIONS, FabricPort, SimCapture
from madpipe.pipeline.sim.processes import Ibsim, find_tool, find_topology, run_tool
from madpipe.pipeline.sim.protocol import (
    SIM_REQUEST_MAD_OFFSET,
    SIM_REQUEST_SIZE,
    SIM_STATUS_UNDELIVERABLE,
    SimError,
    SimRequest,
)

DEFAULT_TOPOLOGY = "net.2sw2path4hca"
DIAGS = ("ibnetdiscover", "smpquery", "perfquery")
#: Share of answers mutated by default: about a handful per run of the chattier tools.
DEFAULT_RATE = {"opensm": 0.05, "ibnetdiscover": 0.1, "smpquery": 1.0, "perfquery": 1.0}
SMPQUERY_OPS = ("nodeinfo", "portinfo", "switchinfo", "pkeys", "nodedesc")
DR_PATHS = ("0", "0,1", "0,1,1", "0,1,2", "0,1,3")
#: No MAD for this long is a hang. opensm waits its sweep interval (10 s) before it sweeps again
#: after a failed sweep: a shorter timeout would call that wait a hang.
DEFAULT_HANG_SECONDS = {"diags": 5.0, "opensm": 15.0}
DIAG_TIMEOUT_MS = "200"
OPENSM_SEND_TIMEOUT = 0.8  # opensm's transaction timeout (200 ms) times its tries (4), as the kernel does  # libibmad's per-MAD timeout: an answer the tool drops costs little
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP,
                 signal.SIGSYS}


@dataclass
class Exchange:
    """One answer the tool got: its identity, its attribute, the edits made to it, what was delivered."""

    key: str
    attribute: str
    edits: list[Edit]
    mad: bytes
    tid: int


@dataclass
class Outcome:
    """One case: what ran, how it ended, what it was answered, and what was found."""

    case: int
    tool: str
    argv: list[str]
    returncode: int | None
    output: str
    exchanges: list[Exchange]
    findings: list[Finding] = field(default_factory=list)
    requests: list[tuple[int, int]] = field(default_factory=list)  # (TID, attribute) of what the tool sent
    datagrams: list = field(default_factory=list)

    @property
    def edits(self) -> list[tuple[str, Edit]]:
        return [(x.key, e) for x in self.exchanges for e in x.edits]


def first_hca(topology: str) -> str | None:
    """The first channel adapter a topology file names (where the SM and the diags attach)."""
    m = re.search(r'^\s*Hca\w*\s+\d+\s+"([^"]+)"', Path(topology).read_text(errors="replace"), re.M)
    return m.group(1) if m else None


def _allow_core() -> None:  # in the child, before the tool: let a crash leave its core (as far as allowed)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    except (ValueError, OSError):
        pass


class FabricTarget:
    """Tools run against a fabric whose answers are mutated; ``run_case(N)`` judges case N."""

    def __init__(self, kind: str, seed: int, workdir: str, *, tools=None, topology: str = DEFAULT_TOPOLOGY,
                 rate: float | None = None, hang_seconds: float | None = None, tool_seconds: float = 20.0,
                 opensm_binary: str | None = None, diags_dir: str | None = None,
                 allow_network_exposure: bool = False):
        if kind not in ("opensm", "diags"):
            raise MadpipeError(f"unknown fabric target {kind!r}")
        self.kind, self.seed = kind, int(seed)
        self.tools = ("opensm",) if kind == "opensm" else tuple(tools or DIAGS)
        for t in self.tools:
            if t not in DEFAULT_RATE or (kind == "diags") == (t == "opensm"):
                raise MadpipeError(f"--tool {t}: {kind} runs {', '.join(DIAGS) if kind == 'diags' else 'opensm'}")
        self.rate = rate
        self.mutators = {t: AnswerMutator(seed, DEFAULT_RATE[t] if rate is None else rate) for t in self.tools}
        self.binaries = {t: self._binary(t, opensm_binary, diags_dir) for t in self.tools + ("opensm",)}
        self.topology = find_topology(topology)
        self.hang_seconds = DEFAULT_HANG_SECONDS[kind] if hang_seconds is None else hang_seconds
        self.tool_seconds = tool_seconds
        self.workdir = workdir
        self.stats: Counter = Counter()
        self.mutated: Counter = Counter()  # attribute -> mutated answers
        self.fields: Counter = Counter()   # attribute.field -> edits
        self.ports: list[FabricPort] = []
        self._armed = False
        self._plan: dict[str, list[Edit]] | None = None
        self.sim = SimCapture(self.topology, sm_node=first_hca(self.topology), workdir=workdir,
                              tool_timeout=tool_seconds, allow_network_exposure=allow_network_exposure)
        self.sim.start()
        try:
            self.sim.relay.answer_hook = self._hook
            if kind == "opensm":  # its sweep waits on the kernel's send timeouts, which umad2sim lacks
                self.sim.relay.send_timeout = OPENSM_SEND_TIMEOUT
            self._fabric_up()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _binary(tool: str, opensm_binary, diags_dir) -> str:
        if tool == "opensm" and opensm_binary:
            path = opensm_binary
        elif tool != "opensm" and diags_dir:
            path = os.path.join(diags_dir, tool)
        else:
            return find_tool(tool)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise MadpipeError(f"{path}: no such executable")
        return os.path.abspath(path)

    def close(self) -> None:
        self.sim.stop()

    # -- the fabric --------------------------------------------------------------------------------

    def _fabric_up(self) -> None:
        """For the diags: opensm (unmutated) assigns LIDs; ibnetdiscover lists the ports they query."""
        self._armed = False
        if self.kind == "opensm":
            return
        self.sim.runs.clear()
        parts = os.path.join(self.workdir, "partitions.conf")
        Path(parts).write_text(DEFAULT_PARTITIONS)
        self.sim.run_opensm(parts)
        self.ports = self.sim.ports()
        if not self.ports:
            raise SimError(f"ibnetdiscover found no port in {self.topology}")

    def _restart_ibsim(self) -> None:
        sim = self.sim
        sim.ibsim.stop()
        sim.ibsim = Ibsim(self.topology, sim.ibsim.base, self.workdir, sim.host)
        sim.ibsim.start()

    # -- what case N runs --------------------------------------------------------------------------

    def command(self, case: int) -> tuple[str, list[str]]:
        """(tool, arguments) of case ``case``: a hash of the seed and the case, as the mutations are."""
        rng = CaseRng(self.seed, np.array([case], dtype=np.int64))
        tool = self.tools[int(rng.below("tool", len(self.tools))[0])]
        if tool == "opensm":
            return tool, ["-e", "-f", os.path.join(self.workdir, "opensm-fuzz.log"),
                          "-P", os.path.join(self.workdir, "partitions.conf"), "--once"]
        port = self.ports[int(rng.below("port", len(self.ports))[0])]
        t = ["-t", DIAG_TIMEOUT_MS]
        if tool == "ibnetdiscover":
            return tool, t + (["-p"] if rng.chance("ports", 0.5)[0] else [])
        if tool == "perfquery":
            return tool, t + (["-x"] if rng.chance("extended", 0.3)[0] else []) + [str(port.lid), str(port.port)]
        op = SMPQUERY_OPS[int(rng.below("op", len(SMPQUERY_OPS))[0])]
        switches = [p for p in self.ports if p.kind == "SW"]
        if op == "switchinfo" and switches:
            port = switches[int(rng.below("switch", len(switches))[0])]
        args = [str(port.port)] if op in ("portinfo", "pkeys") else []
        if rng.chance("directed", 0.25)[0]:
            return tool, t + ["-D", op, DR_PATHS[int(rng.below("path", len(DR_PATHS))[0])], *args]
        return tool, t + [op, str(port.lid), *args]

    # -- the relay's hook (relay thread) -------------------------------------------------------------

    def _hook(self, conn, data: bytes) -> bytes:
        if not self._armed or len(data) != SIM_REQUEST_SIZE:
            return data
        req = SimRequest.unpack(data)
        if not req.response or req.status == SIM_STATUS_UNDELIVERABLE:
            return data
        base = answer_key(req.mad, req.slid)
        key = f"{base}#{self._seen[base]}"
        self._seen[base] += 1
        if self._plan is not None:
            edits = self._plan.get(key, [])
        else:
            edits = self._mutator.edits(self._case, key, req.mad)
        mad = apply_edits(req.mad, edits) if edits else req.mad
        self._exchanges.append(Exchange(key, attribute_name(req.mad), edits, mad,
                                        int.from_bytes(mad[8:16], "big")))
        return data[:SIM_REQUEST_MAD_OFFSET] + mad if edits else data

    # -- one case ------------------------------------------------------------------------------------

    def run_case(self, case: int, plan: dict[str, list[Edit]] | None = None) -> Outcome:
        """Run case ``case`` (with ``plan``: exactly those edits, for replays and minimising) and judge it."""
        tool, args = self.command(case)
        if tool == "opensm":
            Path(self.workdir, "partitions.conf").write_text(DEFAULT_PARTITIONS)
            self._restart_ibsim()  # opensm's Sets change the fabric: every case starts from the same one
        for old in Path(self.workdir).glob("core*"):
            old.unlink()
        relay = self.sim.relay
        relay.datagrams.clear()
        self._case, self._plan, self._mutator = case, plan, self.mutators[tool]
        self._seen: Counter = Counter()
        self._exchanges: list[Exchange] = []
        self._why = None
        self._progress = (0, time.monotonic())
        argv = [self.binaries[tool], *args]
        env = self.sim.tool_env()
        env.setdefault("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0")  # umad2sim is preloaded
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._armed = True
        try:
            run = run_tool(argv, env, self.workdir, self.tool_seconds, tool, abort=self._abort,
                           preexec_fn=_allow_core)
            rc, output = run.returncode, run.output
        except SimError as exc:
            rc, output = None, str(exc)
        finally:
            self._armed = False
        out = Outcome(case, tool, [tool, *args], rc, output, list(self._exchanges))
        out.datagrams = list(relay.datagrams)
        out.requests = [(int.from_bytes(d.data[SIM_REQUEST_MAD_OFFSET + 8:SIM_REQUEST_MAD_OFFSET + 16], "big"),
                         int.from_bytes(d.data[SIM_REQUEST_MAD_OFFSET + 16:SIM_REQUEST_MAD_OFFSET + 18], "big"))
                        for d in out.datagrams if d.direction == "to_sim" and len(d.data) == SIM_REQUEST_SIZE]
        self._judge(out)
        if out.tool != "opensm" and (out.returncode is None or out.returncode < 0) and self._why != "ibsim":
            # A client that dies never says DISCONNECT: ibsim keeps its slot (10 in all), so start afresh.
            self._restart_ibsim()
            self._fabric_up()
        if plan is None:  # replays and minimising runs are not the run's figures
            self._count(out)
        return out

    def _abort(self) -> str | None:
        why = self.sim._broken()
        if why is not None:
            self._why = "ibsim"
            return why
        n, since = self._progress
        now = time.monotonic()
        if len(self.sim.relay.datagrams) != n:
            self._progress = (len(self.sim.relay.datagrams), now)
        elif now - since > self.hang_seconds:
            self._why = "hang"
            return f"made no progress (no MAD sent or answered) for {self.hang_seconds:g} s"
        return None

    def _judge(self, out: Outcome) -> None:
        name = self.kind
        found = out.findings
        if out.returncode is None:
            if self._why == "ibsim":  # the tool drove ibsim into its own crash: ibsim's finding
                found.append(Finding("ibsim", "died", SEVERITY_TOOL, out.case, f"while {out.tool} ran",
                                     f"ibsim died while {' '.join(out.argv)} ran: {out.output}"))
                self._restart_ibsim()
                self._fabric_up()
            else:
                last = self._last_log_error() if out.tool == "opensm" else None
                found.append(Finding(name, "hang", SEVERITY_TOOL, out.case,
                                     out.tool + (f" after {last}" if last else ""),
                                     f"{' '.join(out.argv)}: {out.output}" + (f" (its log's last error: {last})"
                                                                              if last else "")))
            return
        if out.returncode < 0 and -out.returncode in CRASH_SIGNALS:
            sig = signal.Signals(-out.returncode).name
            data: dict = {"signal": sig}
            core = checks.find_core(self.workdir, 0)
            site = None
            if core is not None:
                frames = checks.core_backtrace(self.binaries[out.tool], core)
                if frames is None:
                    data["backtrace"] = "gdb is not installed: no backtrace (apt-get install gdb)"
                else:
                    data["backtrace"] = frames
                    site = checks.crash_site(frames)
                os.unlink(core)
            else:
                data["backtrace"] = f"no core file (core_pattern is {checks.core_pattern()!r})"
            found.append(Finding(name, "crash", SEVERITY_TOOL, out.case, f"{out.tool} {sig} at {site or '?'}",
                                 f"{' '.join(out.argv)} died of {sig}" + (f" in {site}" if site else ""), data=data))
        report = checks.sanitizer_report(out.output)
        if report is not None:
            what, site = report
            found.append(Finding(name, "sanitizer", SEVERITY_TOOL, out.case, f"{out.tool} {what} at {site}",
                                 f"{' '.join(out.argv)}: {what} in {site}"))
        if out.tool == "smpquery" and out.returncode == 0:
            self._wrong_answer(out)

    def _last_log_error(self) -> str | None:
        """The code of the last error opensm logged (``ERR 541A``): what a hang of it followed."""
        codes = re.findall(r"\bERR ([0-9A-F]{4})\b", Path(self.workdir, "opensm-fuzz.log").read_text(errors="replace")
                           if Path(self.workdir, "opensm-fuzz.log").exists() else "")
        return f"ERR {codes[-1]}" if codes else None

    def _wrong_answer(self, out: Outcome) -> None:
        args = [a for a in out.argv[1:] if a not in ("-t", DIAG_TIMEOUT_MS, "-D")]
        op = args[0]
        attr = checks.SMPQUERY_ATTRS.get(op)
        # What smpquery printed is the last answer it took (libibmad matches TID bits 0-31) to a
        # query for that attribute: a redirect or a retry asks again.
        asked = {tid & 0xFFFFFFFF for tid, attr_id in out.requests if attr_id == attr}
        answer = next((x for x in reversed(out.exchanges) if x.tid & 0xFFFFFFFF in asked), None)
        if answer is None:
            return
        port = int(args[2]) if op == "portinfo" and len(args) > 2 else 0
        for fld, why in checks.wrong_answers(op, port, answer.mad, out.output):
            out.findings.append(Finding(self.kind, "wrong-answer", SEVERITY_TOOL, out.case, f"smpquery {op} {fld}",
                                        f"{' '.join(out.argv)}: {why}"))

    def _count(self, out: Outcome) -> None:
        s = self.stats
        s["runs"] += 1
        s["exchanges"] += len(out.exchanges)
        for x in out.exchanges:
            if x.edits:
                s["mutated"] += 1
                self.mutated[x.attribute] += 1
                for e in x.edits:
                    self.fields[f"{x.attribute}.{e.field.split('[', 1)[0]}"] += 1
        if out.returncode not in (0, None):
            s["exit status not 0"] += 1
        for f in out.findings:
            s[f.kind] += 1
