"""IBA chapter 9 transport headers and 7.7 LRH/GRH: the headers in front of a MAD on the wire.

Every reserved bit is a field, so build(parse(x)) == x for all x. Names follow the IBA tables
(and Wireshark's infiniband.* fields where the IBA spelling is ambiguous).
"""
from construct import BitsInteger, BitStruct, Bytes, Bytewise

# The headers' sizes and numbers are defined in wire (no construct: the kernels import them there).
from madpipe.codecs.wire import (
    BTH_SIZE,
    DETH_SIZE,
    GRH_SIZE,
    IB_DEFAULT_PKEY_FULL,
    IB_PERMISSIVE_LID,
    IB_QP1_QKEY,
    LRH_SIZE,
    OPCODE_UD_SEND_ONLY,
    OPCODE_UD_SEND_ONLY_IMM,
    UD_OPCODES,
)

__all__ = [
    "LRH", "GRH", "BTH", "DETH", "opcode_name",
    "LRH_SIZE", "GRH_SIZE", "BTH_SIZE", "DETH_SIZE", "OPCODE_UD_SEND_ONLY", "OPCODE_UD_SEND_ONLY_IMM",
    "UD_OPCODES", "IB_QP1_QKEY", "IB_DEFAULT_PKEY_FULL", "IB_PERMISSIVE_LID",
]

LRH = BitStruct(
    "vl" / BitsInteger(4),
    "lver" / BitsInteger(4),
    "sl" / BitsInteger(4),
    "resv2" / BitsInteger(2),
    "lnh" / BitsInteger(2),
    "dlid" / BitsInteger(16),
    "resv5" / BitsInteger(5),
    "pktlen" / BitsInteger(11),
    "slid" / BitsInteger(16),
)
LRH.__doc__ = """IBA 7.7 Local Route Header, 8 bytes. pktlen counts 4-byte words from LRH through ICRC."""

GRH = BitStruct(
    "ipver" / BitsInteger(4),
    "tclass" / BitsInteger(8),
    "flow_label" / BitsInteger(20),
    "paylen" / BitsInteger(16),
    "nxthdr" / BitsInteger(8),
    "hoplmt" / BitsInteger(8),
    "sgid" / Bytewise(Bytes(16)),
    "dgid" / Bytewise(Bytes(16)),
)
GRH.__doc__ = """IBA 8.3 Global Route Header, 40 bytes (present when LRH.lnh == 3)."""

BTH = BitStruct(
    "opcode" / BitsInteger(8),
    "se" / BitsInteger(1),
    "m" / BitsInteger(1),
    "padcnt" / BitsInteger(2),
    "tver" / BitsInteger(4),
    "pkey" / BitsInteger(16),
    "resv8a" / BitsInteger(8),
    "dqp" / BitsInteger(24),
    "a" / BitsInteger(1),
    "resv7b" / BitsInteger(7),
    "psn" / BitsInteger(24),
)
BTH.__doc__ = """IBA 9.2 Base Transport Header, 12 bytes."""

DETH = BitStruct(
    "qkey" / BitsInteger(32),
    "resv8" / BitsInteger(8),
    "sqp" / BitsInteger(24),
)
DETH.__doc__ = """IBA 9.3.3 Datagram Extended Transport Header, 8 bytes: Q_Key and source QP."""

_TRANSPORT = {0: "RC", 1: "UC", 2: "RD", 3: "UD", 4: "CNP", 5: "XRC"}
_OPS = {
    0x00: "SEND First", 0x01: "SEND Middle", 0x02: "SEND Last", 0x03: "SEND Last Immediate",
    0x04: "SEND Only", 0x05: "SEND Only Immediate", 0x06: "RDMA WRITE First",
    0x07: "RDMA WRITE Middle", 0x08: "RDMA WRITE Last", 0x09: "RDMA WRITE Last Immediate",
    0x0A: "RDMA WRITE Only", 0x0B: "RDMA WRITE Only Immediate", 0x0C: "RDMA READ Request",
    0x0D: "RDMA READ Response First", 0x0E: "RDMA READ Response Middle",
    0x0F: "RDMA READ Response Last", 0x10: "RDMA READ Response Only", 0x11: "Acknowledge",
    0x12: "ATOMIC Acknowledge", 0x13: "CmpSwap", 0x14: "FetchAdd",
    0x16: "SEND Last Invalidate", 0x17: "SEND Only Invalidate",
}


def opcode_name(opcode: int) -> str:
    """'UD SEND Only' style name of a BTH opcode, per IBA table 38."""
    transport = _TRANSPORT.get(opcode >> 5)
    op = _OPS.get(opcode & 0x1F)
    if transport is None or op is None:
        return f"opcode 0x{opcode:02x}"
    return f"{transport} {op}"
