"""ibsim's wire protocol in remote mode: the structures of its ``include/ibsim.h``, and a client.

In remote mode (``ibsim -r -l BASE``) ibsim and its clients (libumad2sim.so, preloaded into
opensm, smpquery, ibnetdiscover) speak UDP:

- the control socket, on BASE: 80-byte ``struct sim_ctl`` in host byte order (magic 0xdeadbeef,
  clientid, type, len, data[64]). A client sends SIM_CTL_CONNECT carrying ``struct
  sim_client_info`` (its data port as ``id``, ``qp``, ``issm``, the node it attaches to) and gets
  back a slot 0..9 in ``id``; ibsim then sends that slot's traffic to the client's data port.
- one data socket per slot, on BASE+1+slot: 288-byte ``struct sim_request``. ``dlid`` and
  ``slid`` are network-order u16 values held in host u32s; ``dqp``, ``sqp`` and ``status`` are
  network order; 4 bytes of padding; ``length`` is a big-endian u64 at offset 24; the MAD is at 32.

:class:`SimRequest` and :func:`sim_ctl` / :func:`parse_sim_ctl` are those structures;
:class:`SimClient` attaches to a running ibsim as umad2sim's ``sim_client.c`` does.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from madpipe.codecs import mad as madc
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

