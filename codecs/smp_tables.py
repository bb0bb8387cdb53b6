"""IBA 14.2.5: the SMP attributes that are tables, one block per SMP, the block number in the
attribute modifier: GUIDInfo, P_KeyTable, SLtoVLMappingTable, VLArbitrationTable and the three
forwarding tables. Import them from :mod:`madpipe.codecs.smp`, with the other attributes (the
rules of their module docstring hold here: 64 bytes each, reserved bits as fields).
"""
from __future__ import annotations

from construct import Array, BitsInteger, BitStruct, Int8ub, Int16ub, Int64ub, Struct

from madpipe.codecs.attributes import byte_run

IB_NUM_PKEY_ELEMENTS_IN_BLOCK = 32

GUIDInfo = Struct(
    "guids" / Array(8, Int64ub),
)
GUIDInfo.__doc__ = """IBA 14.2.5.5 GUIDInfo, attribute 0x0014: one block of 8 be64 GUIDs, 64 bytes.

attr_mod = block number; guids[i] is GUID index 8 * block + i.
"""

PKeyTable = Struct(
    "pkeys" / Array(IB_NUM_PKEY_ELEMENTS_IN_BLOCK, Int16ub),
)
PKeyTable.__doc__ = """IBA 14.2.5.7 P_KeyTable, attribute 0x0016: one block of 32 be16 P_Keys, 64 bytes.

Bit 15 of a P_Key is the membership type (1 = full member), bits 0-14 the base.
attr_mod: bits 0-15 block number (pkey_block), bits 16-31 port number on a switch
(pkey_switch_port); pkeys[i] is P_Key index 32 * block + i.
"""


def pkey_block(attr_mod: int) -> int:
    """P_KeyTable block number: bits 0-15 of the attribute modifier."""
    return attr_mod & 0xFFFF


def pkey_switch_port(attr_mod: int) -> int:
    """P_KeyTable port number (switches only): bits 16-31 of the attribute modifier."""
    return (attr_mod >> 16) & 0xFFFF


SLtoVLMappingTable = BitStruct(
    "sl_to_vl" / Array(16, BitsInteger(4)),
    byte_run("resv0", 56),
)
SLtoVLMappingTable.__doc__ = """IBA 14.2.5.8 SLtoVLMappingTable, attribute 0x0017, 8 bytes + 56 reserved.

sl_to_vl[sl] is the VL for SL sl, 4 bits each, SL0 in the high nibble of byte 0.
attr_mod: bits 0-7 output port, bits 8-15 input port (switches).
"""

VLArbElement = BitStruct(
    "resv" / BitsInteger(4),
    "vl" / BitsInteger(4),
    "weight" / BitsInteger(8),
)
VLArbElement.__doc__ = """IBA 14.2.5.9 one VL/Weight element of a VLArbitrationTable block, 2 bytes.

resv:4 | vl:4 | weight:8 (struct ib_vl_weight_elem).
"""

VLArbitrationTable = Struct(
    "entries" / Array(32, VLArbElement),
)
VLArbitrationTable.__doc__ = """IBA 14.2.5.9 VLArbitrationTable, attribute 0x0018: 32 VLArbElement, 64 bytes.

attr_mod: bits 16-31 block (1 low-priority 0-31, 2 low 32-63, 3 high 0-31, 4 high 32-63),
bits 0-15 output port (switches).
"""

LinearForwardingTable = Struct(
    "ports" / Array(64, Int8ub),
)
LinearForwardingTable.__doc__ = """IBA 14.2.5.10 LinearForwardingTable, attribute 0x0019: 64 port bytes.

attr_mod = block number; ports[i] is the output port for LID 64 * block + i (255 = none).
"""

RandomForwardingEntry = BitStruct(
    "lid" / BitsInteger(16),
    "valid" / BitsInteger(1),
    "lmc" / BitsInteger(3),
    "resv" / BitsInteger(4),
    "port" / BitsInteger(8),
)
RandomForwardingEntry.__doc__ = """IBA 14.2.5.11 one LID/Port element of a RandomForwardingTable, 4 bytes.

lid:16 | valid:1 | lmc:3 | resv:4 | port:8.
"""

RandomForwardingTable = Struct(
    "entries" / Array(16, RandomForwardingEntry),
)
RandomForwardingTable.__doc__ = """IBA 14.2.5.11 RandomForwardingTable, attribute 0x001A: 16 entries.

attr_mod = block number.
"""

MulticastForwardingTable = Struct(
    "port_masks" / Array(32, Int16ub),
)
MulticastForwardingTable.__doc__ = """IBA 14.2.5.12 MulticastForwardingTable, attribute 0x001B: 32 PortMasks.

attr_mod: bits 28-31 position (which 16 ports), bits 0-8 block; port_masks[i] covers
MLID 0xC000 + 32 * block + i, bit p = port 16 * position + p.
"""
