"""The ``ibsim`` fuzz target: each case's MAD sent to an ibsim started for the run, then a probe.

opensm runs once first, so LID-routed SMPs reach their SMA; after each MAD a directed-route
SubnGet(NodeInfo) probe must be answered: a simulator that exits or stops answering is a finding
(and is restarted). ibsim, opensm and the client run in a private, loopback-only network
namespace (:mod:`madpipe.pipeline.sim.netns`): the malformed MADs stay inside.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs import wire
from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.fuzz.findings import SEVERITY_TOOL, Finding
from madpipe.pipeline.fuzz.mutate.cases import Cases
from madpipe.pipeline.sim.capture import DEFAULT_PARTITIONS
from madpipe.pipeline.sim.netns import PrivateNetwork, contain
from madpipe.pipeline.sim.processes import Ibsim, find_tool, find_umad2sim, free_base, run_tool
from madpipe.pipeline.sim.protocol import SimClient, SimRequest

IBSIM_TOPOLOGY = """# madpipe fuzz: one switch, two channel adapters
Switch\t8 "Switch1"
[1]\t"Hca1"[1]
[2]\t"Hca2"[1]

Hca\t2 "Hca1"
[1]\t"Switch1"[1]

Hca\t2 "Hca2"
[1]\t"Switch1"[2]
"""


class IbsimTarget:
    """Mutated MADs to a simulator started for the run; a dead or silent simulator is a finding."""

    name = "ibsim"

    def __init__(self, workdir: str, timeout: float = 1.0, allow_network_exposure: bool = False):
        find_tool("ibsim")
        self.workdir = os.path.join(workdir, "ibsim")
        os.makedirs(self.workdir, exist_ok=True)
        self.topology = os.path.join(self.workdir, "fabric.net")
        Path(self.topology).write_text(IBSIM_TOPOLOGY)
        self.timeout = timeout
        self.stats = Counter()
        self.ibsim = None
        self.client = None
        self.restarts = 0
        self._tid = 0x7A5E0000
        self.allow_network_exposure = allow_network_exposure
        self.network = PrivateNetwork()
        self._start()

    def _start(self) -> None:
        contain(self.network, self.allow_network_exposure, "madpipe fuzz")
        try:
            self.base = free_base(7400 + 11 * (os.getpid() % 50), "0.0.0.0")
            self.ibsim = Ibsim(self.topology, self.base, self.workdir)
            self.ibsim.start()
            try:
                self._opensm()
                self.client = SimClient("127.0.0.1", self.base, node="Hca2", timeout=self.timeout + 1)
            except BaseException:
                self.ibsim.stop()
                raise
        except BaseException:
            self.network.leave()
            raise

    def _opensm(self) -> None:
        """opensm --once through umad2sim, so the fabric has LIDs; skipped (DR only) without opensm."""
        try:
            opensm, umad2sim = find_tool("opensm"), find_umad2sim()
        except MadpipeError:
            self.stats["no opensm: LIDs unassigned"] = 1
            return
        parts = os.path.join(self.workdir, "partitions.conf")
        Path(parts).write_text(DEFAULT_PARTITIONS)
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SIM_HOST")}
        env.update(LD_PRELOAD=umad2sim, IBSIM_SERVER_NAME="127.0.0.1", IBSIM_SERVER_PORT=str(self.base),
                   OSM_TMP_DIR=self.workdir, OSM_CACHE_DIR=self.workdir, SIM_HOST="Hca1")
        log = os.path.join(self.workdir, "opensm.log")
        run_tool([opensm, "-e", "-f", log, "-P", parts, "--once"], env, self.workdir, 60.0)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None
        if self.ibsim is not None:
            self.ibsim.stop()
            self.ibsim = None
        self.network.leave()

    def _probe(self) -> bool:
        """A directed-route SubnGet(NodeInfo) to the client's own node: True when it is answered."""
        from madpipe.codecs import build

        self._tid += 1
        tid = self._tid
        mad = build.smp_mad(madc.IB_MGMT_METHOD_GET, smpc.IB_SMP_ATTR_NODE_INFO, b"", tid=tid, directed=True)
        self.client.send(SimRequest(wire.IB_PERMISSIVE_LID, wire.IB_PERMISSIVE_LID, 0, 0, 0, mad))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r = self.client.recv(left)
            if r is None:
                return False
            # ibsim puts its client number in TID bits 32-63 of requests: match the low 32 bits.
            if r.tid & 0xFFFFFFFF == tid & 0xFFFFFFFF and r.mad[16:18] == mad[16:18] and r.response:
                return True
            self.stats["answers"] += 1

    def check(self, cases: Cases, cfg, ctx) -> list[Finding]:
        out = []
        for k in np.flatnonzero(cases.mad_off >= 0):
            frame = cases.frames[k].tobytes()  # zero past the frame's length
            m = int(cases.mad_off[k])
            mad = frame[m:m + madc.MAD_SIZE]
            avail = max(0, min(madc.MAD_SIZE, int(cases.length[k]) - m))
            b = wire.bth_offset(frame[1] & 3)
            dlid = int.from_bytes(frame[wire.LRH_DLID:wire.LRH_DLID + 2], "big")
            slid = int.from_bytes(frame[wire.LRH_SLID:wire.LRH_SLID + 2], "big")
            dqp = int.from_bytes(frame[b + wire.BTH_DEST_QP:b + wire.BTH_DEST_QP + 3], "big")
            sqp_at = b + wire.BTH_SIZE + wire.DETH_SRC_QP
            sqp = int.from_bytes(frame[sqp_at:sqp_at + 3], "big")
            req = SimRequest(dlid, slid, dqp, sqp, 0, mad, length=avail)
            try:
                self.client.send(req)
                self.stats["sent"] += 1
                answered = self._probe()
            except (OSError, MadpipeError) as exc:  # SimError: the data socket was refused
                answered = False
                err = str(exc)
            else:
                err = None
            if answered:
                continue
            code = None
            if self.ibsim is not None and self.ibsim.proc is not None:
                try:
                    code = self.ibsim.proc.wait(0.5)  # a dying process: give it the time to go
                except subprocess.TimeoutExpired:
                    code = None
            if code is not None:
                kind, what = "dead", f"ibsim exited with status {code} after this MAD"
                log = self.ibsim.log().strip().splitlines()[-3:]
                data = {"exit": code, "log": log}
            else:
                kind, what = "silent", (f"ibsim stopped answering a directed-route probe within {self.timeout:g} s "
                                        f"after this MAD" + (f" ({err})" if err else ""))
                data = {}
            self.stats[kind] += 1
            out.append(Finding(self.name, kind, SEVERITY_TOOL, int(cases.index[k]), kind, what, data=data))
            self.close()
            self.restarts += 1
            self._start()
        return out
