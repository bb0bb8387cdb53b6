"""A UDP relay between ibsim and its clients that records every datagram (a capture of the fabric).

Why a relay and not dumpcap on ``lo``: it needs no capture privilege (dumpcap on ``lo`` needs
root or CAP_NET_RAW) and no extra package, it cannot drop a datagram silently (a kernel capture
buffer can), and it knows which client and slot each datagram belongs to (the control messages
name the node), which the conversion to IB packets needs. The cost is one loopback hop per
datagram (tens of microseconds) and timestamps taken when the relay reads each datagram.
"""
from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from madpipe.pipeline.sim.processes import busy_port
from madpipe.pipeline.sim.protocol import (
    IBSIM_MAX_CLIENTS,
    PORT_INFO_LID_OFFSET,
    SIM_CTL_CONNECT,
    SIM_CTL_DISCONNECT,
    SIM_CTL_ERROR,
    SIM_CTL_GET_PORTINFO,
    SIM_REQUEST_MAD_OFFSET,
    SIM_REQUEST_SIZE,
    SIM_STATUS_UNDELIVERABLE,
    SimError,
    client_info,
    parse_client_info,
    parse_sim_ctl,
    sim_ctl,
)

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

    ``answer_hook(connection, datagram) -> datagram``, when set, may rewrite what ibsim sends a
    client before it is recorded and passed on (the fuzzer's malicious fabric); it runs on the
    relay's thread.

    ``send_timeout`` (seconds), when set, does what the kernel's MAD layer does and umad2sim does
    not: a request no response matches (class and TID bits 0-47) within that time comes back to
    its sender with status 110 (ETIMEDOUT), as ibsim returns what it cannot deliver; umad2sim
    hands that to the tool as a timed-out send. Without it, a tool that relies on send timeouts
    (opensm) waits for ever on an answer that was lost or rewritten.
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
        self.answer_hook: Callable[[Connection, bytes], bytes] | None = None
        self.send_timeout: float | None = None
        self._outstanding: dict[tuple[int, int, int], tuple[float, bytes, Connection]] = {}

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
                for key, _ev in self._sel.select(0.05 if self._outstanding else None):
                    kind, arg = key.data
                    if kind == "wake":
                        return
                    self._drain(key.fileobj, kind, arg)
                if self._outstanding:
                    self._expire(time.monotonic())
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

    @staticmethod
    def _match_key(conn: Connection, data: bytes) -> tuple[int, int, int] | None:
        """(connection, class, TID bits 0-47) of a MAD, or None when the datagram is not one."""
        if len(data) != SIM_REQUEST_SIZE:
            return None
        mad = data[SIM_REQUEST_MAD_OFFSET:]
        return conn.index, mad[1], int.from_bytes(mad[8:16], "big") & 0xFFFF_FFFF_FFFF

    def _expire(self, now: float) -> None:
        for key, (deadline, data, conn) in list(self._outstanding.items()):
            if deadline <= now:
                del self._outstanding[key]
                if conn.end_ns is None:
                    timed_out = data[:16] + SIM_STATUS_UNDELIVERABLE.to_bytes(4, "big") + data[20:]
                    self._send(self._slot_socks[conn.slot], timed_out, conn.client)
                    self.counts["timed out (emulated)"] += 1

    def _from_client_data(self, data: bytes, slot: int, ts: int) -> None:
        conn = self._slots.get(slot)
        if conn is None:
            self.counts["from unattached client"] += 1
            return
        key = self._match_key(conn, data) if self.send_timeout is not None else None
        if key is not None and not data[SIM_REQUEST_MAD_OFFSET + 3] & 0x80:  # a request: it awaits a response
            self._outstanding[key] = (time.monotonic() + self.send_timeout, data, conn)
        self.datagrams.append(Datagram(ts, conn.index, TO_SIM, data))
        self._send(self._upstream[conn.index], data)

    def _from_sim_data(self, data: bytes, conn: Connection, ts: int) -> None:
        if self.answer_hook is not None:
            data = self.answer_hook(conn, data)
        if self._outstanding:
            key = self._match_key(conn, data)
            status = int.from_bytes(data[16:20], "big") if key is not None else 0
            if key is not None and (data[SIM_REQUEST_MAD_OFFSET + 3] & 0x80 or status == SIM_STATUS_UNDELIVERABLE):
                self._outstanding.pop(key, None)  # matched as the kernel would: class, TID, a response
        self.datagrams.append(Datagram(ts, conn.index, FROM_SIM, data))
        self._send(self._slot_socks[conn.slot], data, conn.client)
