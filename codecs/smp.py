"""IBA 14.2: Subnet Management Packets (SMPs) and every SMP attribute (written in
:mod:`madpipe.codecs.smp_records`, the node, port and SM records, and
:mod:`madpipe.codecs.smp_tables`, the tables of one block per SMP; imported from here).

Two MAD formats carry SMPs, both 256 bytes:

- ``SMP``, LID routed (class 0x01, IBA 14.2.1.1, kernel ``struct ib_smp``): the common header,
  M_Key, 32 reserved bytes, the 64-byte attribute data at byte 64, 128 reserved bytes.
- ``SMPDirected``, directed route (class 0x81, IBA 14.2.1.2). Its 24-byte header is
  ``SMPDirectedHeader``: the common ``MADHeader`` with the same field names and offsets, except
  that ``class_specific`` (bytes 6-7) is split into ``hop_ptr`` (byte 6) and ``hop_cnt``
  (byte 7), as in ``struct ib_smp``. ``status`` stays a whole be16, so bit 15 is the D (direction)
  bit, ``IB_SMP_DIRECTION``, and bits 0-14 the status proper (``smp_direction``, ``dr_status``).

Every attribute schema parses the 64-byte SMP data area and is exactly 64 bytes: an attribute
shorter than that ends with a reserved field. Reserved bits are fields (``resv0``, ``resv1``, ...
in wire order), so ``build(parse(x)) == x`` for every ``x``. Field offsets are those of rdma-core
``libibmad/fields.c`` (bit offsets counted from the most significant bit of byte 0), which the
kernel's ``include/rdma/ib_smi.h``, opensm's ``include/iba/ib_types.h`` and Wireshark's
``packet-infiniband.c`` agree with. Field names are the IBA component names in snake_case
(``PortState`` -> ``port_state``); where the kernel has a plain struct member we use its name
(``struct ib_node_info``: ``sys_guid``, ``node_guid``, ``partition_cap``...).

Bit-packed attributes are ``BitStruct``s so that every field sits at the top level
(``pi.port_state``, not ``pi.state_info1.port_state``). construct 2.10 compiles them by
linking the plain parser (there is no code generation for ``Bitwise``), so their compiled
form is correct but not faster; byte-aligned attributes (``PKeyTable``, ``NodeInfo``,
``GUIDInfo``, forwarding tables) compile to generated code.
"""
from __future__ import annotations

from construct import (
    Bytes,
    Construct,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Struct,
)

from madpipe.codecs.attributes import name_in, schema_in
from madpipe.codecs.mad import MADHeader
from madpipe.codecs.smp_records import (
    LedInfo,
    NodeDescription,
    NodeInfo,
    Notice,
    NoticeWithIssuerGID,
    PortInfo,
    SMInfo,
    SwitchInfo,
    VendorDiag,
    node_description_text,
)
from madpipe.codecs.smp_tables import (
    IB_NUM_PKEY_ELEMENTS_IN_BLOCK,
    GUIDInfo,
    LinearForwardingTable,
    MulticastForwardingTable,
    PKeyTable,
    RandomForwardingEntry,
    RandomForwardingTable,
    SLtoVLMappingTable,
    VLArbElement,
    VLArbitrationTable,
    pkey_block,
    pkey_switch_port,
)

# The attribute IDs and sizes are defined in wire (no construct: the kernels import them there).
from madpipe.codecs.wire import (
    IB_SMP_ATTR_GUID_INFO,
    IB_SMP_ATTR_LED_INFO,
    IB_SMP_ATTR_LINEAR_FORWARD_TABLE,
    IB_SMP_ATTR_MCAST_FORWARD_TABLE,
    IB_SMP_ATTR_NODE_DESC,
    IB_SMP_ATTR_NODE_INFO,
    IB_SMP_ATTR_NOTICE,
    IB_SMP_ATTR_PKEY_TABLE,
    IB_SMP_ATTR_PORT_INFO,
    IB_SMP_ATTR_RANDOM_FORWARD_TABLE,
    IB_SMP_ATTR_SL_TO_VL_TABLE,
    IB_SMP_ATTR_SM_INFO,
    IB_SMP_ATTR_SWITCH_INFO,
    IB_SMP_ATTR_VENDOR_DIAG,
    IB_SMP_ATTR_VENDOR_MASK,
    IB_SMP_ATTR_VL_ARB_TABLE,
    IB_SMP_DATA_SIZE,
    IB_SMP_DIRECTION,
    IB_SMP_MAX_PATH_HOPS,
    NODE_TYPE_CA,
    NODE_TYPE_ROUTER,
    NODE_TYPE_SWITCH,
)

__all__ = [
    "IB_SMP_DATA_SIZE", "IB_SMP_MAX_PATH_HOPS", "IB_SMP_DIRECTION", "IB_SMP_ATTR_NOTICE",
    "IB_SMP_ATTR_NODE_DESC", "IB_SMP_ATTR_NODE_INFO", "IB_SMP_ATTR_SWITCH_INFO", "IB_SMP_ATTR_GUID_INFO",
    "IB_SMP_ATTR_PORT_INFO", "IB_SMP_ATTR_PKEY_TABLE", "IB_SMP_ATTR_SL_TO_VL_TABLE", "IB_SMP_ATTR_VL_ARB_TABLE",
    "IB_SMP_ATTR_LINEAR_FORWARD_TABLE", "IB_SMP_ATTR_RANDOM_FORWARD_TABLE", "IB_SMP_ATTR_MCAST_FORWARD_TABLE",
    "IB_SMP_ATTR_SM_INFO", "IB_SMP_ATTR_VENDOR_DIAG", "IB_SMP_ATTR_LED_INFO", "IB_SMP_ATTR_VENDOR_MASK",
    "IB_NUM_PKEY_ELEMENTS_IN_BLOCK", "NODE_TYPE_NAMES", "PORT_STATE_NAMES", "PHYS_PORT_STATE_NAMES",
    "SM_STATE_NAMES", "SMP", "SMPDirectedHeader", "SMPDirected", "Notice", "NoticeWithIssuerGID",
    "NodeDescription", "NodeInfo", "SwitchInfo", "GUIDInfo", "PortInfo", "PKeyTable", "SLtoVLMappingTable",
    "VLArbElement", "VLArbitrationTable", "LinearForwardingTable", "RandomForwardingEntry",
    "RandomForwardingTable", "MulticastForwardingTable", "SMInfo", "VendorDiag", "LedInfo", "RawAttribute",
    "SMP_ATTRIBUTES", "attribute_name", "attribute_schema", "pkey_block", "pkey_switch_port", "smp_direction",
    "dr_status", "node_description_text",
]

# Value names (IBA 14.2.5.3 NodeType, 14.2.5.6 PortState/PortPhysicalState, 14.2.5.13 SMState).
NODE_TYPE_NAMES = {NODE_TYPE_CA: "CA", NODE_TYPE_SWITCH: "Switch", NODE_TYPE_ROUTER: "Router"}
PORT_STATE_NAMES = {0: "NoChange", 1: "Down", 2: "Init", 3: "Armed", 4: "Active"}
PHYS_PORT_STATE_NAMES = {
    0: "NoChange",
    1: "Sleep",
    2: "Polling",
    3: "Disabled",
    4: "PortConfigurationTraining",
    5: "LinkUp",
    6: "LinkErrorRecovery",
    7: "PhyTest",
}
SM_STATE_NAMES = {0: "NotActive", 1: "Discovering", 2: "Standby", 3: "Master"}


# --------------------------------------------------------------------------- SMP formats

SMP = Struct(
    "hdr" / MADHeader,
    "m_key" / Int64ub,
    "resv" / Bytes(32),
    "data" / Bytes(IB_SMP_DATA_SIZE),
    "resv2" / Bytes(128),
)
SMP.__doc__ = """IBA 14.2.1.1 LID-routed SMP (class 0x01), 256 bytes.

hdr (MADHeader) 0 | m_key be64 24 | resv 32 bytes at 32 | data[64] at 64 | resv2 128 bytes at 128.
"""

SMPDirectedHeader = Struct(
    "base_version" / Int8ub,
    "mgmt_class" / Int8ub,
    "class_version" / Int8ub,
    "method" / Int8ub,
    "status" / Int16ub,
    "hop_ptr" / Int8ub,
    "hop_cnt" / Int8ub,
    "tid" / Int64ub,
    "attr_id" / Int16ub,
    "resv" / Int16ub,
    "attr_mod" / Int32ub,
)
SMPDirectedHeader.__doc__ = """IBA 14.2.1.2 common header of a directed-route SMP, 24 bytes.

The MADHeader layout and names, with class_specific split as in ``struct ib_smp``:
status be16 at 4 (bit 15 = D, IB_SMP_DIRECTION; bits 0-14 = status), hop_ptr at 6, hop_cnt at 7.
"""

SMPDirected = Struct(
    "hdr" / SMPDirectedHeader,
    "m_key" / Int64ub,
    "dr_slid" / Int16ub,
    "dr_dlid" / Int16ub,
    "resv" / Bytes(28),
    "data" / Bytes(IB_SMP_DATA_SIZE),
    "initial_path" / Bytes(IB_SMP_MAX_PATH_HOPS),
    "return_path" / Bytes(IB_SMP_MAX_PATH_HOPS),
)
SMPDirected.__doc__ = """IBA 14.2.1.2 directed-route SMP (class 0x81), 256 bytes (struct ib_smp).

hdr (SMPDirectedHeader) 0 | m_key be64 24 | dr_slid be16 32 | dr_dlid be16 34 | resv 28 bytes
at 36 | data[64] at 64 | initial_path[64] at 128 | return_path[64] at 192.
"""


def smp_direction(status: int) -> int:
    """The D bit of a directed-route SMP's status: 1 on the way back (ib_get_smp_direction)."""
    return 1 if status & IB_SMP_DIRECTION else 0


def dr_status(status: int) -> int:
    """The 15-bit status of a directed-route SMP, without the D bit."""
    return status & 0x7FFF


# --------------------------------------------------------------------------- attributes

RawAttribute = Struct(
    "data" / Bytes(IB_SMP_DATA_SIZE),
)
RawAttribute.__doc__ = """An SMP attribute with no schema here (vendor or unknown ID): the 64 data bytes."""


# --------------------------------------------------------------------------- registry

SMP_ATTRIBUTES: dict[int, tuple[str, Construct]] = {
    IB_SMP_ATTR_NOTICE: ("Notice", Notice),
    IB_SMP_ATTR_NODE_DESC: ("NodeDescription", NodeDescription),
    IB_SMP_ATTR_NODE_INFO: ("NodeInfo", NodeInfo),
    IB_SMP_ATTR_SWITCH_INFO: ("SwitchInfo", SwitchInfo),
    IB_SMP_ATTR_GUID_INFO: ("GUIDInfo", GUIDInfo),
    IB_SMP_ATTR_PORT_INFO: ("PortInfo", PortInfo),
    IB_SMP_ATTR_PKEY_TABLE: ("PKeyTable", PKeyTable),
    IB_SMP_ATTR_SL_TO_VL_TABLE: ("SLtoVLMappingTable", SLtoVLMappingTable),
    IB_SMP_ATTR_VL_ARB_TABLE: ("VLArbitrationTable", VLArbitrationTable),
    IB_SMP_ATTR_LINEAR_FORWARD_TABLE: ("LinearForwardingTable", LinearForwardingTable),
    IB_SMP_ATTR_RANDOM_FORWARD_TABLE: ("RandomForwardingTable", RandomForwardingTable),
    IB_SMP_ATTR_MCAST_FORWARD_TABLE: ("MulticastForwardingTable", MulticastForwardingTable),
    IB_SMP_ATTR_SM_INFO: ("SMInfo", SMInfo),
    IB_SMP_ATTR_VENDOR_DIAG: ("VendorDiag", VendorDiag),
    IB_SMP_ATTR_LED_INFO: ("LedInfo", LedInfo),
}
"""attr_id -> (name, schema): the name is also the schema's name in this module."""



def attribute_name(attr_id: int) -> str:
    """Name of an SMP attribute (the schema's name), 'Vendor0xff01' for vendor IDs, else 'Attr0x....'."""
    return name_in(SMP_ATTRIBUTES, attr_id)


def attribute_schema(attr_id: int, compiled: bool = False) -> Construct:
    """Schema of an SMP attribute's 64-byte data area; RawAttribute when the ID is unknown.

    ``compiled=True`` returns the compiled schema, built on first use and cached.
    """
    return schema_in(SMP_ATTRIBUTES, RawAttribute, attr_id, compiled)
