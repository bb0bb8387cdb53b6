"""ibsim, the InfiniBand fabric simulator: its wire protocol, its processes, and captures of it.

ibsim (Debian ``ibsim-utils``) simulates a fabric from a topology file and answers SMA and PMA
MADs itself. A program built on libibumad (opensm, smpquery, ibnetdiscover) reaches it through
the preloaded ``libumad2sim.so`` instead of ``/dev/infiniband/umadN``. In remote mode
(``ibsim -r -l BASE``) the two speak UDP, with the structures of ibsim's ``include/ibsim.h``:

- the control socket, on BASE: 80-byte ``struct sim_ctl`` in host byte order (magic 0xdeadbeef,
  clientid, type, len, data[64]). A client sends SIM_CTL_CONNECT carrying ``struct
  sim_client_info`` (its data port as ``id``, ``qp``, ``issm``, the node it attaches to) and gets
  back a slot 0..9 in ``id``; ibsim then sends that slot's traffic to the client's data port.
- one data socket per slot, on BASE+1+slot: 288-byte ``struct sim_request``. ``dlid`` and
  ``slid`` are network-order u16 values held in host u32s; ``dqp``, ``sqp`` and ``status`` are
  network order; 4 bytes of padding; ``length`` is a big-endian u64 at offset 24; the MAD is at 32.
  ibsim answers SMA/PMA requests itself (LIDs and QPs swapped), fills a LID-routed request's
  ``slid`` 0 ("auto") with the client's LID, sets TID bits 48-63 of every request to the client's
  slot, forwards other MADs to the client attached at the destination, and returns what it cannot
  deliver to the sender with ``status`` 110.

This module holds the protocol (:class:`SimRequest`, :class:`SimClient`, a client attaching as
umad2sim does), the processes (:class:`Ibsim`, :func:`run_tool`; every process is stopped by its
pid, and :func:`leftover_processes` names any still running), the :class:`Relay` that records a
capture and :class:`SimCapture`, which runs ibsim, the relay and the tools and turns the recorded
datagrams into native IB packets (:func:`datagrams_to_packets`).

Why a relay and not dumpcap on ``lo``: it needs no capture privilege (dumpcap on ``lo`` needs
root or CAP_NET_RAW) and no extra package, it cannot drop a datagram silently (a kernel capture
buffer can), and it knows which client and slot each datagram belongs to (the control messages
name the node), which the conversion needs. The cost is one loopback hop per datagram (tens of
microseconds) and timestamps taken when the relay reads each datagram.
"""
from __future__ import annotations

import atexit
import errno
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from madpipe.codecs import build, mad as madc
from madpipe.codecs.errors import MadpipeError

# -- include/ibsim.h ------------------------------------------------------------------------------

SIM_MAGIC = 0xDEADBEEF
IBSIM_MAX_CLIENTS = 10
IBSIM_DEFAULT_SERVER_PORT = 7070
SIM_CTL_MAX_DATA = 64

SIM_CTL_ERROR = 0
SIM_CTL_CONNECT = 1
SIM_CTL_DISCONNECT = 2
SIM_CTL_GET_PORT = 3
SIM_CTL_GET_VENDOR = 4
SIM_CTL_GET_GID = 5
SIM_CTL_GET_GUID = 6
SIM_CTL_GET_NODEINFO = 7
SIM_CTL_GET_PORTINFO = 8
SIM_CTL_SET_ISSM = 9
SIM_CTL_GET_PKEYS = 10

#: struct sim_ctl: magic, clientid, type, len, data[64]; host byte order.
SIM_CTL = struct.Struct("=IIII64s")
#: struct sim_client_info: id (data port in, slot out), qp, issm, nodeid[32].
SIM_CLIENT_INFO = struct.Struct("=III32s")
#: struct sim_port: lid (host order), state.
SIM_PORT = struct.Struct("=HB")
SIM_REQUEST_SIZE = 288
SIM_REQUEST_MAD_OFFSET = 32

#: ``status`` ibsim puts on a request it could not route or deliver (ETIMEDOUT).
SIM_STATUS_UNDELIVERABLE = 110
PORT_INFO_LID_OFFSET = 16  # PortInfo.LID, bytes 16-17 of the attribute (libibmad IB_PORT_LID_F)

UMAD2SIM_ENV = "MADPIPE_UMAD2SIM"
UMAD2SIM_PATHS = (
    "/usr/lib/x86_64-linux-gnu/umad2sim/libumad2sim.so",
    "/usr/lib/aarch64-linux-gnu/umad2sim/libumad2sim.so",
    "/usr/lib64/umad2sim/libumad2sim.so",
    "/usr/lib/umad2sim/libumad2sim.so",
    "/usr/local/lib/umad2sim/libumad2sim.so",
)
INSTALL_HINT = "install the Debian packages ibsim-utils, opensm and infiniband-diags"
DEFAULT_PARTITIONS = "Default=0x7fff, ipoib : ALL=full;\n"


class SimError(MadpipeError):
    """ibsim or a tool run against it failed: what, and the last lines it printed."""


# -- struct sim_request ---------------------------------------------------------------------------

@dataclass
class SimRequest:
    """``struct sim_request`` with its fields as numbers (LIDs and QPs in host order)."""

    dlid: int
    slid: int
    dqp: int
    sqp: int
    status: int
    mad: bytes
    length: int = madc.MAD_SIZE

    def pack(self) -> bytes:
        mad = bytes(self.mad).ljust(madc.MAD_SIZE, b"\0")[:madc.MAD_SIZE]
        return (struct.pack("=II", socket.htons(self.dlid), socket.htons(self.slid))
                + struct.pack(">IIIIQ", self.dqp, self.sqp, self.status, 0, self.length) + mad)

    @classmethod
    def unpack(cls, data: bytes) -> SimRequest:
        if len(data) != SIM_REQUEST_SIZE:
            raise ValueError(f"a struct sim_request is {SIM_REQUEST_SIZE} bytes, not {len(data)}")
        dlid, slid = struct.unpack_from("=II", data)
        dqp, sqp, status, _pad, length = struct.unpack_from(">IIIIQ", data, 8)
        return cls(socket.ntohs(dlid & 0xFFFF), socket.ntohs(slid & 0xFFFF), dqp, sqp, status,
                   bytes(data[SIM_REQUEST_MAD_OFFSET:]), length)

    @property
    def mgmt_class(self) -> int:
        return self.mad[1]

    @property
    def response(self) -> bool:
        return bool(self.mad[3] & madc.IB_MGMT_METHOD_RESP)

    @property
    def tid(self) -> int:
        return int.from_bytes(self.mad[8:16], "big")


def sim_ctl(clientid: int, ctl_type: int, data: bytes = b"") -> bytes:
    """A ``struct sim_ctl`` message."""
    return SIM_CTL.pack(SIM_MAGIC, clientid, ctl_type, len(data), bytes(data))


def parse_sim_ctl(raw: bytes) -> tuple[int, int, int, bytes] | None:
    """(clientid, type, len, data) of a ``struct sim_ctl``, or None when it is not one."""
    if len(raw) != SIM_CTL.size:
        return None
    magic, clientid, ctl_type, length, data = SIM_CTL.unpack(raw)
    return (clientid, ctl_type, length, data) if magic == SIM_MAGIC else None


def client_info(data_port: int, node: str | None, issm: bool = False, qp: int = 0) -> bytes:
    name = (node or "").encode()[:31]
    return SIM_CLIENT_INFO.pack(data_port, qp, int(issm), name)


def parse_client_info(data: bytes) -> tuple[int, int, int, str]:
    ident, qp, issm, name = SIM_CLIENT_INFO.unpack_from(data)
    return ident, qp, issm, name.split(b"\0", 1)[0].decode(errors="replace")


# -- a client of ibsim -----------------------------------------------------------------------------

class SimClient:
    """Attach to a running ibsim (remote mode) as a client, as umad2sim's ``sim_client.c`` does.

    >>> with SimClient("127.0.0.1", 7070, node="Hca1") as c:  # doctest: +SKIP
    ...     c.send(SimRequest(0xFFFF, 0xFFFF, 0, 0, 0, mad)); answer = c.recv(1.0)
    """

    def __init__(self, host: str, port: int, node: str | None = None, *, issm: bool = False,
                 timeout: float = 2.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.slot: int | None = None
        self._ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._data = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._ctl.settimeout(timeout)
            self._ctl.connect((host, port))
            self._data.bind((self._ctl.getsockname()[0], 0))
            self._data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            info = self.ctl(SIM_CTL_CONNECT, client_info(self._data.getsockname()[1], node, issm), 0)
            self.slot, _qp, _issm, self.node = parse_client_info(info)
            self._data.connect((host, port + 1 + self.slot))
        except OSError as exc:
            self._close_sockets()
            raise SimError(f"cannot attach to ibsim at {host}:{port}: {exc.strerror or exc}") from None
        except SimError:
            self._close_sockets()
            raise

    def ctl(self, ctl_type: int, data: bytes = b"", clientid: int | None = None) -> bytes:
        """One control request and its answer's data; SimError when ibsim says no or is silent."""
        cid = self.slot if clientid is None else clientid
        try:
            self._ctl.send(sim_ctl(cid, ctl_type, data))
            reply = parse_sim_ctl(self._ctl.recv(SIM_CTL.size + 16))
        except TimeoutError:
            raise SimError(f"ibsim at {self.host}:{self.port} did not answer a control request "
                           f"within {self.timeout:g} s") from None
        except ConnectionRefusedError:
            raise SimError(f"nothing listens at {self.host}:{self.port} (is ibsim running, "
                           "in remote mode -r?)") from None
        if reply is None:
            raise SimError(f"{self.host}:{self.port} answered something that is not ibsim's")
        _cid, rtype, _len, rdata = reply
        if rtype == SIM_CTL_ERROR:
            what = "attach" if ctl_type == SIM_CTL_CONNECT else f"control request {ctl_type}"
            raise SimError(f"ibsim at {self.host}:{self.port} refused to {what} (unknown node, "
                           "all 10 client slots taken, or an SM already there)")
        return rdata

    def get_lid(self) -> int:
        """The LID of the port this client is attached to (0 until an SM assigns one)."""
        lid, _state = SIM_PORT.unpack_from(self.ctl(SIM_CTL_GET_PORT))
        return lid

    def send(self, req: SimRequest) -> None:
        self._data.send(req.pack())

    def recv(self, timeout: float | None) -> SimRequest | None:
        """The next datagram from ibsim, or None after ``timeout`` seconds (0: do not wait)."""
        self._data.settimeout(timeout)
        try:
            raw = self._data.recv(SIM_REQUEST_SIZE + 64)
        except (TimeoutError, BlockingIOError):
            return None
        except ConnectionRefusedError:
            raise SimError(f"ibsim at {self.host}:{self.port} went away") from None
        return SimRequest.unpack(raw) if len(raw) == SIM_REQUEST_SIZE else None

    def fileno(self) -> int:
        return self._data.fileno()

    def close(self) -> None:
        if self.slot is not None:
            try:
                self.ctl(SIM_CTL_DISCONNECT)
            except SimError:
                pass
            self.slot = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._ctl.close()
        self._data.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_sim_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or a bare PORT, on 127.0.0.1) of an ibsim's control socket."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        number = int(port, 10)
    except ValueError:
        number = -1
    if not 0 < number < 65536 - IBSIM_MAX_CLIENTS:
        raise MadpipeError(f"--sim {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7070")
    return host or "127.0.0.1", number


# -- processes --------------------------------------------------------------------------------------

_started: dict[int, subprocess.Popen] = {}  # every process this module started and not yet reaped


def _spawn(argv: list[str], **kw) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
    _started[proc.pid] = proc
    return proc


def stop_process(proc: subprocess.Popen, grace: float = 2.0) -> int | None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL after ``grace`` seconds."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
    finally:
        if proc.poll() is not None:
            _started.pop(proc.pid, None)
    return proc.returncode


def leftover_processes() -> list[int]:
    """Pids of processes this module started that are still running (tests assert it is empty)."""
    return [pid for pid, proc in list(_started.items()) if proc.poll() is None]


@atexit.register
def _stop_all() -> None:
    for proc in list(_started.values()):
        stop_process(proc, grace=0.5)


def find_tool(name: str) -> str:
    """Path of ``name`` on PATH, /usr/sbin and /sbin included (opensm and the diags live there)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise SimError(f"{name} is not installed ({INSTALL_HINT})")
    return path


def find_umad2sim() -> str:
    """Path of libumad2sim.so: $MADPIPE_UMAD2SIM, else the usual package locations."""
    override = os.environ.get(UMAD2SIM_ENV)
    if override:
        if not os.path.exists(override):
            raise SimError(f"{UMAD2SIM_ENV}={override}: no such file")
        return override
    for path in UMAD2SIM_PATHS:
        if os.path.exists(path):
            return path
    raise SimError(f"libumad2sim.so is not installed ({INSTALL_HINT}; or set {UMAD2SIM_ENV})")


@dataclass
class ToolRun:
    """One tool run against the simulator: what ran, how it ended, what it printed."""

    name: str
    argv: list[str]
    returncode: int
    output: str
    start_ns: int
    end_ns: int
    errors: list[str] = field(default_factory=list)  # error lines of the tool's log (opensm)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _tail(text: str, lines: int = 4) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def run_tool(argv: list[str], env: dict, cwd: str, timeout: float, name: str | None = None,
             abort=None) -> ToolRun:
    """Run one tool to its end; output merged.

    The tool is stopped by its pid after ``timeout`` seconds, or as soon as ``abort()`` returns
    a reason (the simulator it talks to is gone: umad2sim would wait for it forever).
    """
    name = name or os.path.basename(argv[0])
    start = time.time_ns()
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile(mode="w+", dir=cwd, errors="replace") as log:
        proc = _spawn(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    proc.wait(min(0.1, max(deadline - time.monotonic(), 0.001)))
                    break
                except subprocess.TimeoutExpired:
                    why = abort() if abort is not None else None
                    if why is None and time.monotonic() < deadline:
                        continue
                    stop_process(proc)
                    log.seek(0)
                    why = why or f"did not finish within {timeout:g} s"
                    raise SimError(f"{name} {why} and was stopped: {_tail(log.read())}") from None
        finally:
            stop_process(proc)
        log.seek(0)
        output = log.read()
    return ToolRun(name, argv, proc.returncode, output, start, time.time_ns())


# -- ports ---------------------------------------------------------------------------------------

def busy_port(base: int, host: str) -> int | None:
    """The first UDP port of base..base+10 that cannot be bound on ``host``, or None if all are free."""
    for port in range(base, base + 1 + IBSIM_MAX_CLIENTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((host, port))
        except OSError:
            return port
        finally:
            s.close()
    return None


def free_base(start: int, host: str, avoid: range | None = None, tries: int = 200) -> int:
    """The first base port from ``start`` (in steps of 11) whose 11 ports are free on ``host``."""
    base = start
    for _ in range(tries):
        if base + IBSIM_MAX_CLIENTS >= 65536:
            break
        if (avoid is None or base > avoid[-1] or base + IBSIM_MAX_CLIENTS < avoid[0]) \
                and busy_port(base, host) is None:
            return base
        base += IBSIM_MAX_CLIENTS + 1
    raise SimError(f"no 11 free consecutive UDP ports from {start} on {host}")


# -- ibsim ---------------------------------------------------------------------------------------

class Ibsim:
    """An ibsim process in remote mode on ``base``..``base``+10, started and stopped by pid.

    ibsim binds its sockets to every address (INADDR_ANY: it has no option to bind one); madpipe
    only ever talks to it on ``host``, loopback by default.
    """

    def __init__(self, topology: str | os.PathLike, base: int, workdir: str, host: str = "127.0.0.1"):
        self.topology = os.fspath(topology)
        self.base, self.host, self.workdir = base, host, workdir
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(workdir, "ibsim.log")

    def start(self, timeout: float = 10.0) -> None:
        if not os.path.isfile(self.topology):
            raise SimError(f"{self.topology}: no such topology file")
        busy = busy_port(self.base, "0.0.0.0")
        if busy is not None:
            raise SimError(f"UDP port {busy} is in use: ibsim needs {self.base}..{self.base + 10} "
                           "free (another ibsim?); choose another base port")
        with open(self.log_path, "w") as log:
            self.proc = _spawn([find_tool("ibsim"), "-s", "-n", "-r", "-l", str(self.base),
                                self.topology], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Ping the control socket until ibsim's loop answers (DISCONNECT of the empty slot 0)."""
        deadline = time.monotonic() + timeout
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.settimeout(0.05)
            s.connect((self.host, self.base))
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SimError(f"ibsim exited with status {self.proc.returncode} on "
                                   f"{self.topology}: {_tail(self.log())}")
                try:
                    s.send(sim_ctl(0, SIM_CTL_DISCONNECT))
                    if parse_sim_ctl(s.recv(SIM_CTL.size + 16)):
                        return
                except (TimeoutError, ConnectionRefusedError):
                    time.sleep(0.02)
        self.stop()
        raise SimError(f"ibsim did not answer on {self.host}:{self.base} within {timeout:g} s")

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# -- the relay -----------------------------------------------------------------------------------

TO_SIM, FROM_SIM = "to_sim", "from_sim"


@dataclass
class Connection:
    """One client attachment seen by the relay: slot, node, and the LIDs ibsim reported for it."""

    index: int
    slot: int
    node: str
    client: tuple[str, int]  # the client's data socket
    start_ns: int
    lids: list[tuple[int, int]] = field(default_factory=list)  # (ts_ns, lid) from GET_PORTINFO
    end_ns: int | None = None


@dataclass(slots=True)
class Datagram:
    ts_ns: int
    conn: int  # Connection.index
    direction: str  # TO_SIM or FROM_SIM
    data: bytes


class Relay:
    """A UDP relay that clients take for ibsim: every datagram is forwarded and recorded.

    It listens on ``host``:``listen_base``..+10 and talks to ibsim at ``host``:``sim_base``..+10.
    A CONNECT is forwarded with the client's data port replaced by a relay socket of its own, so
    ibsim sends that slot's traffic to the relay, which passes it on to the client.
    """

    def __init__(self, listen_base: int, sim_base: int, host: str = "127.0.0.1"):
        self.listen_base, self.sim_base, self.host = listen_base, sim_base, host
        self.datagrams: list[Datagram] = []
        self.connections: list[Connection] = []
        self.counts: Counter[str] = Counter()
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._slots: dict[int, Connection] = {}
        self._upstream: dict[int, socket.socket] = {}  # Connection.index -> its socket to ibsim
        self._ctl_up: dict[tuple, socket.socket] = {}  # client ctl address -> socket to ibsim
        self._pending: dict[tuple, tuple[socket.socket, tuple[str, int]]] = {}
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self.error: BaseException | None = None

    def _sock(self, bind: tuple[str, int]) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            s.bind(bind)
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self._socks.append(s)
        return s

    def start(self) -> None:
        busy = busy_port(self.listen_base, self.host)
        if busy is not None:
            raise SimError(f"UDP port {busy} on {self.host} is in use: the capture relay needs "
                           f"{self.listen_base}..{self.listen_base + 10} free; choose another --port")
        try:
            self._ctl = self._sock((self.host, self.listen_base))
            self._slot_socks = [self._sock((self.host, self.listen_base + 1 + i))
                                for i in range(IBSIM_MAX_CLIENTS)]
        except OSError as exc:
            self.close()
            raise SimError(f"the capture relay cannot bind {self.host}:{self.listen_base}: "
                           f"{exc.strerror or exc}") from None
        self._sel.register(self._ctl, selectors.EVENT_READ, ("ctl_in", None))
        for i, s in enumerate(self._slot_socks):
            self._sel.register(s, selectors.EVENT_READ, ("slot_in", i))
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._thread = threading.Thread(target=self._loop, name="madpipe-ibsim-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._wake_w.send(b"x")
            self._thread.join(5)
            self._thread = None
        self.close()
        if self.error is not None:
            raise SimError(f"the capture relay failed: {self.error}")

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks.clear()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    def _loop(self) -> None:
        try:
            while True:
                for key, _ev in self._sel.select():
                    kind, arg = key.data
                    if kind == "wake":
                        return
                    self._drain(key.fileobj, kind, arg)
        except Exception as exc:  # noqa: BLE001 - the thread's error, raised again by stop()
            self.error = exc

    def _drain(self, sock: socket.socket, kind: str, arg) -> None:
        while sock.fileno() >= 0:  # a DISCONNECT answer closes its sockets while they drain
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable on a connected socket: peer gone
                if exc.errno in (errno.ECONNREFUSED, errno.ENOTCONN):
                    self.counts["peer gone"] += 1
                    continue
                raise
            ts = time.time_ns()
            if kind == "ctl_in":
                self._from_client_ctl(data, addr, ts)
            elif kind == "ctl_up":
                self._from_sim_ctl(data, arg, ts)
            elif kind == "slot_in":
                self._from_client_data(data, arg, ts)
            elif kind == "data_up":
                self._from_sim_data(data, arg, ts)

    def _from_client_ctl(self, data: bytes, addr: tuple, ts: int) -> None:
        up = self._ctl_up.get(addr)
        if up is None:
            up = self._sock((self.host, 0))
            up.connect((self.host, self.sim_base))
            self._ctl_up[addr] = up
            self._sel.register(up, selectors.EVENT_READ, ("ctl_up", addr))
        msg = parse_sim_ctl(data)
        if msg is not None and msg[1] == SIM_CTL_CONNECT:
            clientid, _type, _len, payload = msg
            port, qp, issm, node = parse_client_info(payload)
            down = self._sock((self.host, 0))  # connected to the slot's port on the answer
            old = self._pending.pop(addr, None)
            if old is not None:
                self._forget(old[0])
            self._pending[addr] = (down, (addr[0], port))
            data = sim_ctl(clientid, SIM_CTL_CONNECT,
                           client_info(down.getsockname()[1], node, bool(issm), qp))
        self.counts["ctl"] += 1
        self._send(up, data)

    def _from_sim_ctl(self, data: bytes, addr: tuple, ts: int) -> None:
        msg = parse_sim_ctl(data)
        if msg is not None:
            clientid, ctl_type, _len, payload = msg
            if ctl_type == SIM_CTL_CONNECT and addr in self._pending:
                down, client = self._pending.pop(addr)
                slot, _qp, _issm, node = parse_client_info(payload)
                self._attach(slot, node, client, down, ts)
            elif ctl_type == SIM_CTL_ERROR and addr in self._pending:
                self._forget(self._pending.pop(addr)[0])
            elif ctl_type == SIM_CTL_DISCONNECT and clientid in self._slots:
                conn = self._slots.pop(clientid)
                conn.end_ns = ts
                self._forget(self._upstream.pop(conn.index))
            elif ctl_type == SIM_CTL_GET_PORTINFO and clientid in self._slots:
                lid = int.from_bytes(payload[PORT_INFO_LID_OFFSET:PORT_INFO_LID_OFFSET + 2], "big")
                self._slots[clientid].lids.append((ts, lid))
        self._send(self._ctl, data, addr)
        if msg is not None and msg[1] == SIM_CTL_DISCONNECT:  # that client is done
            self._forget(self._ctl_up.pop(addr))

    def _attach(self, slot: int, node: str, client: tuple, down: socket.socket, ts: int) -> None:
        old = self._slots.pop(slot, None)
        if old is not None:  # ibsim dropped a dead client without telling: the slot is reused
            old.end_ns = ts
            self._forget(self._upstream.pop(old.index))
        conn = Connection(len(self.connections), slot, node, client, ts)
        self.connections.append(conn)
        self._slots[slot] = conn
        down.connect((self.host, self.sim_base + 1 + slot))
        self._upstream[conn.index] = down
        self._sel.register(down, selectors.EVENT_READ, ("data_up", conn))

    def _forget(self, s: socket.socket) -> None:
        try:
            self._sel.unregister(s)
        except KeyError:
            pass
        if s in self._socks:
            self._socks.remove(s)
        s.close()

    def _send(self, sock: socket.socket, data: bytes, addr: tuple | None = None) -> None:
        """Forward one datagram; a full socket buffer is waited out briefly, a dead peer counted."""
        for _ in range(100):
            try:
                if addr is None:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
                return
            except BlockingIOError:
                time.sleep(0.001)
            except (ConnectionRefusedError, ConnectionResetError):
                self.counts["peer gone"] += 1
                return
        self.counts["not forwarded (buffer full)"] += 1

    def _from_client_data(self, data: bytes, slot: int, ts: int) -> None:
        conn = self._slots.get(slot)
        if conn is None:
            self.counts["from unattached client"] += 1
            return
        self.datagrams.append(Datagram(ts, conn.index, TO_SIM, data))
        self._send(self._upstream[conn.index], data)

    def _from_sim_data(self, data: bytes, conn: Connection, ts: int) -> None:
        self.datagrams.append(Datagram(ts, conn.index, FROM_SIM, data))
        self._send(self._slot_socks[conn.slot], data, conn.client)


# -- from recorded datagrams to IB packets -------------------------------------------------------

def _lid_timeline(datagrams: list[Datagram], connections: list[Connection]) -> dict[int, list]:
    """Per connection, (ts_ns, lid) of its own port, as ibsim showed it.

    ibsim fills a LID-routed request's ``slid`` 0 with the sender's LID, so everything it sends to
    a client names that client's LID: ``dlid`` of an answer, a forward or a trap, ``slid`` of a
    request returned undeliverable. GET_PORTINFO answers at attach time give the first value.
    """
    seen: dict[int, list] = {c.index: list(c.lids) for c in connections}
    for d in datagrams:
        if d.direction != FROM_SIM or len(d.data) != SIM_REQUEST_SIZE:
            continue
        req = SimRequest.unpack(d.data)
        if req.mgmt_class == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
            continue
        lid = req.slid if req.status == SIM_STATUS_UNDELIVERABLE else req.dlid
        if lid not in (0, build.ibh.IB_PERMISSIVE_LID):
            seen[d.conn].append((d.ts_ns, lid))
    for marks in seen.values():
        marks.sort()
    return seen


def _lid_at(marks: list, ts: int) -> int:
    """The first LID seen at or after ``ts`` (the request's own answer), else the last before."""
    last = 0
    for t, lid in marks:
        if lid and t >= ts:
            return lid
        if lid:
            last = lid
    return last


def sim_request_frame(req: SimRequest) -> bytes:
    """The native IB packet of one ``struct sim_request``: SMPs on VL15 QP0, other MADs on VL0 QP1."""
    mad = bytes(req.mad[:min(req.length, madc.MAD_SIZE)]).ljust(madc.MAD_SIZE, b"\0")
    if req.mgmt_class in (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
        return build.build_smp_frame(mad, slid=req.slid, dlid=req.dlid)
    return build.build_gmp_frame(mad, slid=req.slid, dlid=req.dlid, dqp=req.dqp, sqp=req.sqp)


#: Datagrams :func:`datagrams_to_packets` leaves out, by the count that names them.
LEFT_OUT = ("returned undeliverable", "not a sim_request")


def datagrams_to_packets(datagrams: list[Datagram], connections: list[Connection],
                         counts: Counter | None = None) -> list[tuple[int, bytes]]:
    """(ts_ns, packet) for every recorded MAD, as it would cross the link at the client's port.

    What ibsim does to a request on arrival is done here too, so that requests and answers agree
    as on a real wire: TID bits 48-63 become the sender's slot, and a LID-routed request's
    ``slid`` 0 becomes the sender's LID. Directed-route SMPs keep the permissive LID 0xFFFF.
    Datagrams ibsim returned as undeliverable (status 110) never crossed a link: they are counted
    and left out, as are datagrams that are not a ``struct sim_request``.
    """
    counts = Counter() if counts is None else counts
    marks = _lid_timeline(datagrams, connections)
    slot_of = {c.index: c.slot for c in connections}
    out = []
    for d in datagrams:
        if len(d.data) != SIM_REQUEST_SIZE:
            counts["not a sim_request"] += 1
            continue
        req = SimRequest.unpack(d.data)
        if req.status == SIM_STATUS_UNDELIVERABLE and d.direction == FROM_SIM:
            counts["returned undeliverable"] += 1
            continue
        if d.direction == TO_SIM:
            if not req.response:
                tid = (req.tid & 0xFFFF_FFFF_FFFF) | (slot_of[d.conn] << 48)
                req.mad = req.mad[:8] + tid.to_bytes(8, "big") + req.mad[16:]
            if req.slid == 0 and req.mgmt_class != madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
                req.slid = _lid_at(marks[d.conn], d.ts_ns)
                if req.slid == 0:
                    counts["source LID unknown"] += 1
        out.append((d.ts_ns, sim_request_frame(req)))
        counts["packets"] += 1
    return out


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
    """ibsim on loopback behind a recording relay, and the tools run against it.

    >>> with SimCapture("net.2sw2path4hca", sm_node="Hca1") as sim:  # doctest: +SKIP
    ...     sim.run_opensm("partitions.conf")
    ...     print(sim.smpquery("pkeys", "4", "1"))
    ... sim.write("out.pcap")

    ``port`` is the base port clients see (the relay's); None picks a free one from 7070. ibsim
    itself listens on the next free range. Everything started is stopped by pid on ``stop()``
    (and on leaving the ``with``), also when a tool failed.
    """

    def __init__(self, topology: str | os.PathLike, *, port: int | None = None,
                 sm_node: str | None = None, host: str = "127.0.0.1", tool_timeout: float = 60.0,
                 workdir: str | None = None):
        self.topology = os.fspath(topology)
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
        if not os.path.isfile(self.topology):
            raise SimError(f"{self.topology}: no such topology file")
        if self._own_workdir:
            self.workdir = tempfile.mkdtemp(prefix="madpipe-sim-")
        try:
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
                           f"{_tail(run.output)}")
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
        text = _read(log)
        if run.returncode != 0 or "SUBNET UP" not in text:
            raise SimError(f"opensm -P {partitions} did not bring the subnet up "
                           f"(status {run.returncode}): {_tail(text or run.output)}")
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


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


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
