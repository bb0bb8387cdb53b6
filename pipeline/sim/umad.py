"""libibumad through ctypes: send and receive MADs on a umad device (``/dev/infiniband/umadN``).

On a host with an InfiniBand adapter this needs read/write access to the umad device (root, or
the rdma group; QP0 SMPs need the SMI, so root). Here it runs against ibsim with libumad2sim.so
preloaded into the Python process (the CA is then called ``ibsim0``)::

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/umad2sim/libumad2sim.so IBSIM_SERVER_NAME=127.0.0.1 \\
        IBSIM_SERVER_PORT=7070 SIM_HOST=Hca1 madpipe replay -r cap.pcap --umad ibsim0

Names follow libibumad's ``umad.h``: ``struct ib_user_mad`` (agent_id, status, timeout_ms,
retries, length, then ``ib_mad_addr_t`` and the MAD), ``umad_open_port``, ``umad_register``,
``umad_send``, ``umad_recv``. Under umad2sim the device's file descriptor is a fake one (1024 and
up) that only its wrapped ``poll`` knows, so waiting goes through ``umad_recv``'s own timeout.

umad2sim waits for ibsim for ever (it retries its connect in a loop): before opening a port under
it, :func:`check_umad2sim` makes sure an ibsim answers where umad2sim will look, and the open
itself has a timeout, so a missing simulator is one line naming what was awaited, never a hang.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import threading
import time

from madpipe.codecs import mad as madc
from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.sim.protocol import (
    IBSIM_DEFAULT_SERVER_PORT,
    SIM_CTL,
    SIM_CTL_DISCONNECT,
    parse_sim_ctl,
    sim_ctl,
)

IB_QP1_QKEY = 0x80010000
UMAD_LIB_NAMES = ("ibumad", )
UMAD_LIB_FALLBACK = "libibumad.so.3"
MAD_SIZE = madc.MAD_SIZE
OPEN_TIMEOUT = 10.0  # seconds for umad_init and umad_open_port, which umad2sim can block for ever
UMAD2SIM_LOCAL_CTL = b"\0sim:ctl\0"  # the abstract socket of a local-mode ibsim (no IBSIM_SERVER_NAME)
SETUP_HINT = ("start ibsim in remote mode (ibsim -r -l 7070 TOPOLOGY) and set IBSIM_SERVER_NAME=127.0.0.1 "
              "IBSIM_SERVER_PORT=7070 SIM_HOST=NODE")


class UmadError(MadpipeError):
    pass


class ib_mad_addr_t(ctypes.Structure):
    """``ib_mad_addr_t`` of umad.h (network-order fields kept as raw integers)."""

    _fields_ = [("qpn", ctypes.c_uint32), ("qkey", ctypes.c_uint32), ("lid", ctypes.c_uint16),
                ("sl", ctypes.c_uint8), ("path_bits", ctypes.c_uint8),
                ("grh_present", ctypes.c_uint8), ("gid_index", ctypes.c_uint8),
                ("hop_limit", ctypes.c_uint8), ("traffic_class", ctypes.c_uint8),
                ("gid", ctypes.c_uint8 * 16), ("flow_label", ctypes.c_uint32),
                ("pkey_index", ctypes.c_uint16), ("reserved", ctypes.c_uint8 * 6)]


class ib_user_mad(ctypes.Structure):
    """``struct ib_user_mad`` of umad.h, without its MAD.

    ``umad_size()`` says where the MAD starts: 64 bytes with the kernel's pkey_index ABI, 56
    without it (the older header, which umad2sim keeps); both share every field read here.
    """

    _fields_ = [("agent_id", ctypes.c_uint32), ("status", ctypes.c_uint32),
                ("timeout_ms", ctypes.c_uint32), ("retries", ctypes.c_uint32),
                ("length", ctypes.c_uint32), ("addr", ib_mad_addr_t)]


class umad_port_t(ctypes.Structure):
    """``umad_port_t`` of umad.h (what ``umad_get_port`` fills from sysfs)."""

    _fields_ = [("ca_name", ctypes.c_char * 20), ("portnum", ctypes.c_int),
                ("base_lid", ctypes.c_uint), ("lmc", ctypes.c_uint), ("sm_lid", ctypes.c_uint),
                ("sm_sl", ctypes.c_uint), ("state", ctypes.c_uint), ("phys_state", ctypes.c_uint),
                ("rate", ctypes.c_uint), ("capmask", ctypes.c_uint32),
                ("gid_prefix", ctypes.c_uint64), ("port_guid", ctypes.c_uint64),
                ("pkeys_size", ctypes.c_uint), ("pkeys", ctypes.c_void_p),
                ("link_layer", ctypes.c_char * 20)]


def load_libibumad() -> ctypes.CDLL:
    name = ctypes.util.find_library("ibumad") or UMAD_LIB_FALLBACK
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise UmadError("libibumad is not installed (Debian package libibumad3)") from None
    vp, i = ctypes.c_void_p, ctypes.c_int
    lib.umad_init.restype = i
    lib.umad_open_port.argtypes = [ctypes.c_char_p, i]
    lib.umad_register.argtypes = [i, i, i, ctypes.c_uint8, vp]
    lib.umad_unregister.argtypes = [i, i]
    lib.umad_close_port.argtypes = [i]
    lib.umad_size.restype = ctypes.c_size_t
    lib.umad_set_addr.argtypes = [vp, i, i, i, i]
    lib.umad_set_pkey.argtypes = [vp, i]
    lib.umad_get_port.argtypes = [ctypes.c_char_p, i, ctypes.POINTER(umad_port_t)]
    lib.umad_release_port.argtypes = [ctypes.POINTER(umad_port_t)]
    lib.umad_get_mad.argtypes = [vp]
    lib.umad_get_mad.restype = vp
    lib.umad_send.argtypes = [i, i, vp, i, i, i]
    lib.umad_recv.argtypes = [i, vp, ctypes.POINTER(i), i]
    return lib


def check_umad2sim(environ=os.environ, timeout: float = 2.0) -> None:
    """When libumad2sim.so is preloaded, UmadError unless an ibsim answers where it will look.

    With IBSIM_SERVER_NAME set that is ibsim's control socket at IBSIM_SERVER_NAME:IBSIM_SERVER_PORT
    (default 7070), pinged as madpipe's own Ibsim is; without it, a local-mode ibsim's abstract
    socket ``@sim:ctl``.
    """
    if "umad2sim" not in environ.get("LD_PRELOAD", ""):
        return
    host = environ.get("IBSIM_SERVER_NAME")
    if not host:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.connect(UMAD2SIM_LOCAL_CTL)
                return
            except OSError:
                pass
        raise UmadError("libumad2sim.so is preloaded but IBSIM_SERVER_NAME is not set, and no local "
                        f"ibsim listens (socket @sim:ctl), which umad2sim would wait for: {SETUP_HINT}")
    port = int(environ.get("IBSIM_SERVER_PORT") or IBSIM_DEFAULT_SERVER_PORT)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
            s.send(sim_ctl(0, SIM_CTL_DISCONNECT))  # slot 0's DISCONNECT: answered, changes nothing
            if parse_sim_ctl(s.recv(SIM_CTL.size + 16)) is not None:
                return
            why = "answered something that is not ibsim's"
    except TimeoutError:
        why = f"did not answer within {timeout:g} s"
    except OSError as exc:
        why = f"cannot be reached: {exc.strerror or exc}"
    raise UmadError(f"libumad2sim.so is preloaded and waits for ibsim at {host}:{port} "
                    f"(IBSIM_SERVER_NAME, IBSIM_SERVER_PORT), which {why}: {SETUP_HINT}")


def _with_timeout(call, timeout: float, what: str):
    """``call()``'s result, or UmadError naming ``what`` when it has not returned in ``timeout`` s
    (the call stays blocked in a daemon thread: C code cannot be interrupted)."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(call()), name="madpipe-umad-open", daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        raise UmadError(f"{what} did not return within {timeout:g} s")
    return box[0]


class Umad:
    """One open umad port with an agent per management class, as a send/receive pair."""

    def __init__(self, ca: str, port: int = 0, classes: dict[int, int] | None = None,
                 open_timeout: float = OPEN_TIMEOUT):
        self.lib = load_libibumad()
        check_umad2sim()
        env = os.environ
        waits = (f"umad2sim waits for ibsim at {env.get('IBSIM_SERVER_NAME', '@sim:ctl')}:"
                 f"{env.get('IBSIM_SERVER_PORT', IBSIM_DEFAULT_SERVER_PORT)}"
                 if "umad2sim" in env.get("LD_PRELOAD", "") else "waiting for the umad device")
        self.fd = -1
        if _with_timeout(self.lib.umad_init, open_timeout, f"umad_init ({waits})") < 0:
            raise UmadError("umad_init failed (is the ib_umad module loaded?)")
        self.fd = _with_timeout(lambda: self.lib.umad_open_port(ca.encode(), port), open_timeout,
                                f"umad_open_port of {ca!r} ({waits})")
        if self.fd < 0:
            raise UmadError(f"cannot open umad port {port} of {ca!r}: {os.strerror(-self.fd)} "
                            "(a CA name such as mlx5_0; under libumad2sim.so it is ibsim0)")
        self.ca, self.port = ca, port
        self.agents: dict[int, int] = {}
        info = umad_port_t()
        self.lid = 0  # the port's LID, for the LRH of answers written to a capture
        if self.lib.umad_get_port(ca.encode(), port, ctypes.byref(info)) == 0:
            self.lid, self.port = info.base_lid, info.portnum
            self.lib.umad_release_port(ctypes.byref(info))
        size = self.lib.umad_size()  # known once the port is open (the ABI is negotiated then)
        if size < ctypes.sizeof(ib_user_mad) - 8 or size > 256:
            self.close()
            raise UmadError(f"libibumad's struct ib_user_mad is {size} bytes: not a layout madpipe knows")
        self._recv_buf = ctypes.create_string_buffer(size + MAD_SIZE)
        self._size = size
        for mgmt_class, version in (classes or {}).items():
            self.register(mgmt_class, version)

    def register(self, mgmt_class: int, class_version: int) -> int:
        agent = self.lib.umad_register(self.fd, mgmt_class, class_version, 0, None)
        if agent < 0:
            raise UmadError(f"cannot register an agent for class 0x{mgmt_class:02x} on {self.ca}: "
                            f"{os.strerror(-agent)}")
        self.agents[mgmt_class] = agent
        return agent

    def send(self, mad: bytes, dlid: int, dqp: int, timeout_ms: int = 0, retries: int = 0) -> None:
        agent = self.agents.get(mad[1])
        if agent is None:
            agent = self.register(mad[1], mad[2])
        buf = ctypes.create_string_buffer(self._size + MAD_SIZE)
        ctypes.memmove(self.lib.umad_get_mad(buf), bytes(mad), MAD_SIZE)
        smp = mad[1] in (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
        self.lib.umad_set_addr(buf, dlid, dqp, 0, 0 if smp else IB_QP1_QKEY)
        self.lib.umad_set_pkey(buf, 0)
        rc = self.lib.umad_send(self.fd, agent, buf, MAD_SIZE, timeout_ms, retries)
        if rc < 0:
            raise UmadError(f"umad_send failed: {os.strerror(ctypes.get_errno() or -rc)}")

    def recv(self, timeout_ms: int) -> tuple[bytes, int, int, int, int] | None:
        """(MAD, status, source LID, source QP, agent) of the next MAD, or None after the timeout."""
        buf = self._recv_buf
        length = ctypes.c_int(MAD_SIZE)
        agent = self.lib.umad_recv(self.fd, buf, ctypes.byref(length), timeout_ms)
        if agent < 0:
            if -agent in (errno.ETIMEDOUT, errno.EAGAIN) or ctypes.get_errno() in (errno.ETIMEDOUT, errno.EAGAIN):
                return None
            raise UmadError(f"umad_recv failed: {os.strerror(-agent)}")
        n = max(0, min(length.value, MAD_SIZE))
        mad = buf.raw[self._size:self._size + n].ljust(MAD_SIZE, b"\0")
        hdr = ib_user_mad.from_buffer(buf)
        lid = int.from_bytes(hdr.addr.lid.to_bytes(2, "little"), "big")  # __be16 read as host
        qpn = int.from_bytes(hdr.addr.qpn.to_bytes(4, "little"), "big")
        return mad, hdr.status, lid, qpn, agent

    def close(self) -> None:
        if self.fd >= 0:
            for agent in self.agents.values():
                self.lib.umad_unregister(self.fd, agent)
            self.lib.umad_close_port(self.fd)
            self.fd = -1


class UmadTransport:
    """``madpipe replay --umad``: the replay loop's transport over :class:`Umad`."""

    def __init__(self, ca: str, port: int = 0, timeout_ms: int = 1000):
        self.umad = Umad(ca, port)
        self.timeout_ms = int(timeout_ms)
        self.name = f"umad {ca} port {self.umad.port} (LID {self.umad.lid})"

    def send(self, item) -> None:
        # The kernel delivers an answer only to a request still waiting for it: send with a timeout.
        self.umad.send(item.mad, item.dlid, item.dqp,
                       self.timeout_ms if item.expects_answer else 0)

    def poll(self, timeout: float) -> list:
        from madpipe.pipeline.sim.replay import Answer

        answers = []
        wait_ms = max(int(timeout * 1000), 0)
        while (got := self.umad.recv(wait_ms)) is not None:
            mad, status, lid, qpn, _agent = got
            ts = time.time_ns()
            # ETIMEDOUT: the kernel gave our request back unanswered (umad2sim: ibsim could not
            # deliver it, with the same status on purpose).
            dr = mad[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
            answers.append(Answer(ts, mad, 0xFFFF if dr else self.umad.lid, lid, 0, qpn,
                                  timed_out=status == errno.ETIMEDOUT))
            wait_ms = 0
        return answers

    def close(self) -> None:
        self.umad.close()
