"""ibsim, the InfiniBand fabric simulator: its wire protocol, its processes, and captures of it.

ibsim (Debian ``ibsim-utils``) simulates a fabric from a topology file and answers SMA and PMA
MADs itself. A program built on libibumad (opensm, smpquery, ibnetdiscover) reaches it through
the preloaded ``libumad2sim.so`` instead of ``/dev/infiniband/umadN``. In remote mode
(``ibsim -r -l BASE``) the two speak UDP, with the structures of ibsim's ``include/ibsim.h``
(:mod:`~madpipe.pipeline.sim.protocol` describes them). ibsim answers SMA/PMA requests itself and
forwards other MADs to the client attached at the destination.

This module holds :class:`SimCapture`, which runs ibsim, the relay and the tools and turns the
recorded datagrams into native IB packets, and the parsers of the tools' output. The parts it is
built from live in their own modules (import each name from there):

- :mod:`~madpipe.pipeline.sim.protocol`: the protocol (:class:`SimRequest`, :class:`SimClient`,
  a client attaching as umad2sim does);
- :mod:`~madpipe.pipeline.sim.processes`: the processes (:class:`Ibsim`, :func:`run_tool`; every
  process is stopped by its pid, and :func:`leftover_processes` names any still running);
- :mod:`~madpipe.pipeline.sim.relay`: the :class:`Relay` that records a capture;
- :mod:`~madpipe.pipeline.sim.netns`: the private, loopback-only network namespace they all run
  in (:class:`PrivateNetwork`);
- :mod:`~madpipe.pipeline.sim.packets`: recorded datagrams to IB packets
  (:func:`datagrams_to_packets`).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from madpipe.pipeline.sim.netns import PrivateNetwork, contain
from madpipe.pipeline.sim.packets import datagrams_to_packets
from madpipe.pipeline.sim.processes import (
    Ibsim,
    ToolRun,
    find_tool,
    find_topology,
    find_umad2sim,
    free_base,
    read_log,
    run_tool,
    tail_lines,
)
from madpipe.pipeline.sim.protocol import IBSIM_DEFAULT_SERVER_PORT, IBSIM_MAX_CLIENTS, SimError
from madpipe.pipeline.sim.relay import Relay

DEFAULT_PARTITIONS = "Default=0x7fff, ipoib : ALL=full;\n"


# -- a capture session ---------------------------------------------------------------------------

_IBNET_PORT = re.compile(r"^(CA|SW)\s+(\d+)\s+(\d+)\s+(0x[0-9a-fA-F]+)")


@dataclass
class FabricPort:
    kind: str  # "CA" or "SW"
    lid: int
    port: int
    guid: int


def parse_ibnetdiscover_ports(text: str) -> list[FabricPort]:
    """Ports of ``ibnetdiscover -p`` output, plus port 0 of every switch (its management port)."""
    ports, switches = [], {}
    for line in text.splitlines():
        m = _IBNET_PORT.match(line)
        if m:
            kind, lid, port, guid = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4), 16)
            ports.append(FabricPort(kind, lid, port, guid))
            if kind == "SW":
                switches[lid] = guid
    ports += [FabricPort("SW", lid, 0, guid) for lid, guid in switches.items()]
    return sorted(ports, key=lambda p: (p.lid, p.port))


class SimCapture:
    """ibsim on loopback behind a recording relay, and the tools run against it, in a private network.

    >>> with SimCapture("net.2sw2path4hca", sm_node="Hca1") as sim:  # doctest: +SKIP
    ...     sim.run_opensm("partitions.conf")
    ...     print(sim.smpquery("pkeys", "4", "1"))
    ... sim.write("out.pcap")

    ``topology`` is a file, or the bare name of one of ibsim's examples (``find_topology``).
    ``port`` is the base port clients see (the relay's); None picks a free one from 7070. ibsim
    itself listens on the next free range. Everything started is stopped by pid on ``stop()``
    (and on leaving the ``with``), also when a tool failed.

    From ``start()`` to ``stop()`` the calling thread is in a network namespace of its own with
    only loopback (:class:`~madpipe.pipeline.sim.netns.PrivateNetwork`): ibsim, the relay and every
    tool run there, and so does whatever the caller runs meanwhile (a replay into this fabric).
    Call ``stop()`` from the thread that started it. Where no namespace can be made, ``start()``
    refuses with :class:`~madpipe.pipeline.sim.netns.NetnsUnavailable`, unless
    ``allow_network_exposure``: then ibsim runs on the machine's network, ``exposure`` says why
    and stderr says so once.
    """

    def __init__(self, topology: str | os.PathLike, *, port: int | None = None,
                 sm_node: str | None = None, host: str = "127.0.0.1", tool_timeout: float = 60.0,
                 workdir: str | None = None, allow_network_exposure: bool = False):
        self.topology = os.fspath(topology)
        self.allow_network_exposure = allow_network_exposure
        self.network = PrivateNetwork()
        self.exposure: str | None = None  # why ibsim runs on the machine's network, when it does
        self.port, self.sm_node, self.host, self.tool_timeout = port, sm_node, host, tool_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir
        self.runs: list[ToolRun] = []
        self.ibsim: Ibsim | None = None
        self.relay: Relay | None = None
        self.counts: Counter[str] = Counter()
        self._stopped = False

    # lifecycle
    def start(self) -> SimCapture:
        find_tool("ibsim")
        self.umad2sim = find_umad2sim()
        self.topology = find_topology(self.topology)
        if self._own_workdir:
            self.workdir = tempfile.mkdtemp(prefix="madpipe-sim-")
        try:
            self.exposure = contain(self.network, self.allow_network_exposure, "madpipe capture")
            if self.port is None:
                self.port = free_base(IBSIM_DEFAULT_SERVER_PORT, self.host)
            sim_base = free_base(self.port + IBSIM_MAX_CLIENTS + 1, "0.0.0.0",
                                 avoid=range(self.port, self.port + IBSIM_MAX_CLIENTS + 1))
            self.relay = Relay(self.port, sim_base, self.host)
            self.relay.start()  # first: it checks the port the user chose
            self.ibsim = Ibsim(self.topology, sim_base, self.workdir, self.host)
            self.ibsim.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def contained(self) -> bool:
        """True while ibsim and the tools run in a private, loopback-only network namespace."""
        return self.network.inside

    def stop(self) -> None:
        """Stop ibsim and the relay (idempotent); remove the work directory if it is ours."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.ibsim is not None:
                self.ibsim.stop()
        finally:
            try:
                if self.relay is not None:
                    self.relay.stop()
            finally:
                self.network.leave()
                if self._own_workdir and self.workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # tools
    def tool_env(self, node: str | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("SIM_HOST", "SIM_SET_ISSM", "LD_PRELOAD")}
        env.update(LD_PRELOAD=self.umad2sim, IBSIM_SERVER_NAME=self.host,
                   IBSIM_SERVER_PORT=str(self.port), OSM_TMP_DIR=self.workdir,
                   OSM_CACHE_DIR=self.workdir)
        node = node or self.sm_node
        if node:
            env["SIM_HOST"] = node
        return env

    def run(self, name: str, *args: str, node: str | None = None, check: bool = True) -> ToolRun:
        """Run an infiniband-diags style tool against the simulator; SimError when it fails."""
        if self._stopped or self.ibsim is None:
            raise SimError("the simulator is not running")
        run = run_tool([find_tool(name), *args], self.tool_env(node), self.workdir,
                       self.tool_timeout, name, abort=self._broken)
        self.runs.append(run)
        if not self._own_workdir:  # the caller keeps the logs: each tool's output too
            Path(self.workdir, f"{len(self.runs):02d}-{name}.out").write_text(run.output)
        if check and run.returncode != 0:
            raise SimError(f"{' '.join([name, *args])} failed with status {run.returncode}: "
                           f"{tail_lines(run.output)}")
        return run

    def run_opensm(self, partitions: str | os.PathLike | None = None) -> ToolRun:
        """``opensm --once`` with ``partitions`` (default: one Default partition, ALL full)."""
        if partitions is None:
            partitions = os.path.join(self.workdir, "partitions-default.conf")
            Path(partitions).write_text(DEFAULT_PARTITIONS)
        elif not os.path.isfile(partitions):
            raise SimError(f"{partitions}: no such partitions file")
        n = sum(r.name == "opensm" for r in self.runs) + 1
        log = os.path.join(self.workdir, f"opensm-{n}.log")
        run = self.run("opensm", "-e", "-f", log, "-P", os.path.abspath(partitions), "--once",
                       check=False)
        text = read_log(log)
        if run.returncode != 0 or "SUBNET UP" not in text:
            raise SimError(f"opensm -P {partitions} did not bring the subnet up "
                           f"(status {run.returncode}): {tail_lines(text or run.output)}")
        run.errors = _OSM_ERROR.findall(text)
        return run

    def smpquery(self, *args: str) -> str:
        return self.run("smpquery", *args).output

    def ports(self) -> list[FabricPort]:
        """Every port of the fabric, from ``ibnetdiscover -p`` (the query shows in the capture)."""
        return parse_ibnetdiscover_ports(self.run("ibnetdiscover", "-p").output)

    def query_pkeys(self) -> dict[tuple[int, int], list[int]]:
        """``smpquery pkeys LID PORT`` for every port: {(lid, port): P_Key table}."""
        return {(p.lid, p.port): parse_smpquery_pkeys(self.smpquery("pkeys", str(p.lid), str(p.port)))
                for p in self.ports()}

    def _broken(self) -> str | None:
        """Why the tools cannot get answers any more (ibsim exited, the relay failed), or None."""
        if self.ibsim.proc is not None and self.ibsim.proc.poll() is not None:
            return f"lost ibsim (it exited with status {self.ibsim.proc.returncode})"
        if self.relay.error is not None:
            return f"lost the capture relay ({self.relay.error})"
        return None

    # output
    def packets(self) -> list[tuple[int, bytes]]:
        if self.relay is None:
            return []
        self.counts["datagrams"] = len(self.relay.datagrams)
        self.counts["clients"] = len(self.relay.connections)
        return datagrams_to_packets(self.relay.datagrams, self.relay.connections, self.counts)

    def write(self, path, linktype: int | None = None) -> int:
        """Write the capture so far (packets with the relay's timestamps); returns frames written."""
        from madpipe.codecs.capture import LINKTYPE_ERF, CaptureWriter

        packets = self.packets()
        with CaptureWriter(path, linktype=LINKTYPE_ERF if linktype is None else linktype) as w:
            for ts, packet in packets:
                w.write(packet, ts)
        return len(packets)


_OSM_ERROR = re.compile(r"\] 0x01 -> (.*)")  # opensm's log level OSM_LOG_ERROR
_PKEY_LINE = re.compile(r"^\s*(\d+):((?:\s+0x[0-9a-fA-F]{4})+)\s*$")


def parse_smpquery_pkeys(text: str) -> list[int]:
    """The P_Key table of ``smpquery pkeys`` output (its 'N pkeys capacity' line sets the length)."""
    table: dict[int, int] = {}
    capacity = None
    for line in text.splitlines():
        m = _PKEY_LINE.match(line)
        if m:
            for i, word in enumerate(m.group(2).split()):
                table[int(m.group(1)) + i] = int(word, 16)
        elif "pkeys capacity" in line:
            capacity = int(line.split()[0])
    size = capacity if capacity is not None else (max(table) + 1 if table else 0)
    return [table.get(i, 0) for i in range(size)]
