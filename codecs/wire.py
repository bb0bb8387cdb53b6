"""The numbers of InfiniBand management traffic on the wire, and where the MAD starts in a packet.

Header sizes, LNH values and opcodes (IBA 7.7, 8.3, 9.2, 9.3), the permissive LID, management
classes, methods and SMP attribute IDs (13.4, 14.2, kernel names), and the byte offsets that
code without construct reads. This module imports nothing: the numba kernels import it (numba
reads module-level integers and tuples as compile-time constants, and a kernel module wraps
:func:`mad_start` with ``njit``), so a ``madpipe snoop`` never loads construct. ``ib_headers``,
``mad`` and ``smp`` take their chapter's numbers from here (``smp.IB_SMP_ATTR_PKEY_TABLE`` is
this module's). The construct schemas stay the reference for every offset:
tests/test_field_table.py checks each one here against the field table read off them.
"""

# -- the headers in front of a MAD (IBA 7.7 LRH, 8.3 GRH, 9.2 BTH, 9.3.3 DETH, 7.8 CRCs) --------

# LRH.LNH: what follows the LRH.
LNH_RAW = 0
LNH_IP_NON_IBA = 1
LNH_IBA_LOCAL = 2  # BTH
LNH_IBA_GLOBAL = 3  # GRH, then BTH

LRH_SIZE = 8
GRH_SIZE = 40
BTH_SIZE = 12
DETH_SIZE = 8
IMMDT_SIZE = 4  # the immediate data of a SEND with immediate, after the DETH
ICRC_SIZE = 4
VCRC_SIZE = 2

# Byte offsets of the fields read without construct, from the start of their header.
LRH_DLID = 2  # be16
LRH_PKTLEN = 4  # low 11 bits of a be16: 4-byte words from the LRH through the ICRC
LRH_SLID = 6  # be16
BTH_OPCODE = 0
BTH_PKEY = 2  # be16
BTH_DEST_QP = 5  # be24
BTH_PSN = 9  # be24
DETH_QKEY = 0  # be32
DETH_SRC_QP = 5  # be24

# BTH opcodes (IBA 9.2 table 38) that carry a DETH; MADs travel as UD SEND only.
OPCODE_UD_SEND_ONLY = 0x64
OPCODE_UD_SEND_ONLY_IMM = 0x65
UD_OPCODES = (OPCODE_UD_SEND_ONLY, OPCODE_UD_SEND_ONLY_IMM)

# QP1's well-known Q_Key (IBA 13.5.1): every GMP carries it; QP0's SMPs ignore the Q_Key.
IB_QP1_QKEY = 0x80010000
IB_DEFAULT_PKEY_FULL = 0xFFFF
IB_PERMISSIVE_LID = 0xFFFF  # a directed-route SMP's LID at an end the route does not name

# -- MADs (IBA 13.4 common MAD, 14.2 SMP) ------------------------------------------------------

MAD_SIZE = 256
MAD_HEADER_SIZE = 24

# Byte offsets in a MAD: the common header (struct ib_mad_hdr) and the SMP (struct ib_smp).
MAD_MGMT_CLASS = 1
MAD_METHOD = 3
MAD_STATUS = 4  # be16; an SMP's bit 15 is the direction (IB_SMP_DIRECTION)
MAD_TID = 8  # be64
MAD_ATTR_ID = 16  # be16
MAD_ATTR_MOD = 20  # be32
SMP_HOP_PTR = 6  # directed route
SMP_HOP_CNT = 7  # directed route
SMP_M_KEY = 24  # be64
SMP_DR_SLID = 32  # be16, directed route
SMP_DR_DLID = 34  # be16, directed route
SMP_DATA = 64  # the attribute, IB_SMP_DATA_SIZE bytes
SMP_INITIAL_PATH = 128  # directed route: IB_SMP_MAX_PATH_HOPS bytes, entry 0 unused
SMP_RETURN_PATH = 192

IB_SMP_DATA_SIZE = 64
IB_SMP_MAX_PATH_HOPS = 64

# Management classes (ib_mad.h IB_MGMT_CLASS_*)
IB_MGMT_CLASS_SUBN_LID_ROUTED = 0x01
IB_MGMT_CLASS_SUBN_ADM = 0x03
IB_MGMT_CLASS_PERF_MGMT = 0x04
IB_MGMT_CLASS_BM = 0x05
IB_MGMT_CLASS_DEVICE_MGMT = 0x06
IB_MGMT_CLASS_CM = 0x07
IB_MGMT_CLASS_SNMP = 0x08
IB_MGMT_CLASS_VENDOR_RANGE1 = 0x09
IB_MGMT_CLASS_VENDOR_RANGE1_END = 0x0F
IB_MGMT_CLASS_DEVICE_ADM = 0x10
IB_MGMT_CLASS_BOOT_MGMT = 0x11
IB_MGMT_CLASS_BIS = 0x12
IB_MGMT_CLASS_CONG_MGMT = 0x21
IB_MGMT_CLASS_VENDOR_RANGE2 = 0x30
IB_MGMT_CLASS_VENDOR_RANGE2_END = 0x4F
IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE = 0x81

# Methods (ib_mad.h IB_MGMT_METHOD_*); bit 7 marks a response.
IB_MGMT_METHOD_GET = 0x01
IB_MGMT_METHOD_SET = 0x02
IB_MGMT_METHOD_SEND = 0x03
IB_MGMT_METHOD_TRAP = 0x05
IB_MGMT_METHOD_REPORT = 0x06
IB_MGMT_METHOD_TRAP_REPRESS = 0x07
IB_MGMT_METHOD_GET_TABLE = 0x12
IB_MGMT_METHOD_GET_TRACE_TABLE = 0x13
IB_MGMT_METHOD_GET_MULTI = 0x14
IB_MGMT_METHOD_DELETE = 0x15
IB_MGMT_METHOD_RESP = 0x80
IB_MGMT_METHOD_GET_RESP = 0x81
IB_MGMT_METHOD_REPORT_RESP = 0x86
IB_MGMT_METHOD_GET_TABLE_RESP = 0x92

# Status field (IBA 13.4.7): bit 15 of an SMP's status is the directed-route D bit.
IB_SMP_DIRECTION = 0x8000

# Subnet management attribute IDs (include/rdma/ib_smi.h IB_SMP_ATTR_*).
IB_SMP_ATTR_NOTICE = 0x0002
IB_SMP_ATTR_NODE_DESC = 0x0010
IB_SMP_ATTR_NODE_INFO = 0x0011
IB_SMP_ATTR_SWITCH_INFO = 0x0012
IB_SMP_ATTR_GUID_INFO = 0x0014
IB_SMP_ATTR_PORT_INFO = 0x0015
IB_SMP_ATTR_PKEY_TABLE = 0x0016
IB_SMP_ATTR_SL_TO_VL_TABLE = 0x0017
IB_SMP_ATTR_VL_ARB_TABLE = 0x0018
IB_SMP_ATTR_LINEAR_FORWARD_TABLE = 0x0019
IB_SMP_ATTR_RANDOM_FORWARD_TABLE = 0x001A
IB_SMP_ATTR_MCAST_FORWARD_TABLE = 0x001B
IB_SMP_ATTR_SM_INFO = 0x0020
IB_SMP_ATTR_VENDOR_DIAG = 0x0030
IB_SMP_ATTR_LED_INFO = 0x0031
IB_SMP_ATTR_VENDOR_MASK = 0xFF00  # 0xFF00-0xFFFF are vendor-specific attributes

# NodeInfo.NodeType (IBA 14.2.5.3)
NODE_TYPE_CA = 1
NODE_TYPE_SWITCH = 2
NODE_TYPE_ROUTER = 3

# Fields of SMP attributes read without construct: byte offsets in the SMP data, named after the
# kernel's struct members (struct ib_node_info, ib_switch_info, ib_port_info).
NODE_INFO_NODE_TYPE = 2
NODE_INFO_PARTITION_CAP = 28  # be16
SWITCH_INFO_PARTITION_ENFORCEMENT_CAP = 14  # be16
PORT_INFO_LID = 16  # be16
PORT_INFO_SM_LID = 18  # be16, MasterSMLID
PORT_INFO_NEIGHBORMTU_MASTERSMSL = 36  # MasterSMSL: the low 4 bits
PORT_INFO_CLIENTREREG_RESV_SUBNETTO = 51  # ClientReregister: bit 7


def bth_offset(lnh):
    """Where the BTH starts in a packet whose LRH.LNH is ``lnh`` (2 or 3; raw packets have none)."""
    return LRH_SIZE + GRH_SIZE if lnh == LNH_IBA_GLOBAL else LRH_SIZE


def mad_start(data, off, length):
    """Where the MAD starts in the packet ``data[off:off + length]`` (from the LRH), or -1: no MAD.

    The rule of ``decode_frame``: LNH 2 (BTH after the LRH) or 3 (a GRH between), BTH opcode UD
    SEND only (with IMMDT_SIZE bytes of immediate data after the DETH for 0x65), a DETH,
    destination or source QP 0 or 1, and a whole MAD before the ICRC and VCRC. Plain integer
    code over ``data[i]``: bytes in Python, a uint8 array in a kernel (``njit(mad_start)``).
    """
    if length < LRH_SIZE:
        return -1
    lnh = data[off + 1] & 3
    if lnh == LNH_IBA_LOCAL:
        bth = off + LRH_SIZE
    elif lnh == LNH_IBA_GLOBAL:
        bth = off + LRH_SIZE + GRH_SIZE  # bth_offset's rule, inline: a kernel calls no plain function
    else:
        return -1
    start = bth - off + BTH_SIZE + DETH_SIZE
    if length < start:
        return -1
    opcode = data[bth + BTH_OPCODE]
    if opcode == OPCODE_UD_SEND_ONLY_IMM:
        start += IMMDT_SIZE
    elif opcode != OPCODE_UD_SEND_ONLY:
        return -1
    q = bth + BTH_DEST_QP
    s = bth + BTH_SIZE + DETH_SRC_QP
    # int(): a kernel's uint8 widened before the shift. (Comparing the bytes one by one instead
    # took a compiled snoop_smps 6% longer: branches where this is straight-line code.)
    dqp = (int(data[q]) << 16) | (int(data[q + 1]) << 8) | int(data[q + 2])
    sqp = (int(data[s]) << 16) | (int(data[s + 1]) << 8) | int(data[s + 2])
    if dqp > 1 and sqp > 1:
        return -1
    if start + MAD_SIZE + ICRC_SIZE + VCRC_SIZE > length:
        return -1
    return start
