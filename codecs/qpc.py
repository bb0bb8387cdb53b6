"""mlx4 QP context: the inbox of a QP state-transition command, as the SR-IOV master rewrites it.

Layouts from ``include/linux/mlx4/qp.h`` (``struct mlx4_qp_path``, ``struct mlx4_qp_context``),
opcodes from ``include/linux/mlx4/cmd.h``. The mailbox framing (optpar be32, 4 reserved bytes, then
the context) is what ``mlx4_qp_modify()`` in ``drivers/net/ethernet/mellanox/mlx4/qp.c`` writes and
what ``resource_tracker.c`` reads back as ``inbox->buf + 8``.

Field names are mainline's. The byte layout has not changed since Linux 3.7 (the seed profile);
only some names have: where a byte was reserved or named differently at 3.7, the field's comment
says so. Every byte is a field (reserved ones too), so ``build(parse(x)) == x`` for any 256 bytes.

Mailbox byte offsets used by the paravirtualization model (``MBOX_*``) are computed from the
schema by :func:`field_offset`, never written down a second time.
"""

from construct import Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct

from .compiled import compiled
from .errors import DecodeError

# enum mlx4_qp_optpar (qp.h): which optional context fields a transition carries.
MLX4_QP_OPTPAR_ALT_ADDR_PATH = 1 << 0
MLX4_QP_OPTPAR_RRE = 1 << 1
MLX4_QP_OPTPAR_RAE = 1 << 2
MLX4_QP_OPTPAR_RWE = 1 << 3
MLX4_QP_OPTPAR_PKEY_INDEX = 1 << 4
MLX4_QP_OPTPAR_Q_KEY = 1 << 5
MLX4_QP_OPTPAR_RNR_TIMEOUT = 1 << 6
MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH = 1 << 7
MLX4_QP_OPTPAR_SRA_MAX = 1 << 8
MLX4_QP_OPTPAR_RRA_MAX = 1 << 9
MLX4_QP_OPTPAR_PM_STATE = 1 << 10
MLX4_QP_OPTPAR_RETRY_COUNT = 1 << 12
MLX4_QP_OPTPAR_RNR_RETRY = 1 << 13
MLX4_QP_OPTPAR_ACK_TIMEOUT = 1 << 14
MLX4_QP_OPTPAR_SCHED_QUEUE = 1 << 16
MLX4_QP_OPTPAR_COUNTER_INDEX = 1 << 20
MLX4_QP_OPTPAR_VLAN_STRIPPING = 1 << 21  # mainline only

# enum mlx4_qp_state: bits 31:28 of the context's flags.
MLX4_QP_STATE_RST = 0
MLX4_QP_STATE_INIT = 1
MLX4_QP_STATE_RTR = 2
MLX4_QP_STATE_RTS = 3
MLX4_QP_STATE_SQER = 4
MLX4_QP_STATE_SQD = 5
MLX4_QP_STATE_ERR = 6
MLX4_QP_STATE_SQ_DRAINING = 7

QP_STATE_NAMES = {0: "RST", 1: "INIT", 2: "RTR", 3: "RTS", 4: "SQER", 5: "SQD", 6: "ERR", 7: "SQ_DRAINING"}

# Service types: bits 23:16 of flags. MLX4_QP_ST_XRC is absent before Linux 3.1.
MLX4_QP_ST_RC = 0x0
MLX4_QP_ST_UC = 0x1
MLX4_QP_ST_RD = 0x2
MLX4_QP_ST_UD = 0x3
MLX4_QP_ST_XRC = 0x6
MLX4_QP_ST_MLX = 0x7

SERVICE_TYPE_NAMES = {0x0: "RC", 0x1: "UC", 0x2: "RD", 0x3: "UD", 0x6: "XRC", 0x7: "MLX"}

# Path-migration state: bits 12:11 of flags.
MLX4_QP_PM_MIGRATED = 0x3
MLX4_QP_PM_ARMED = 0x0
MLX4_QP_PM_REARM = 0x1

# params1 bits
MLX4_QP_BIT_SRE = 1 << 15
MLX4_QP_BIT_SWE = 1 << 14
MLX4_QP_BIT_SAE = 1 << 13
# params2 bits (MLX4_QP_BIT_FPP is mainline only; mainline clears it for slaves)
MLX4_QP_BIT_RRE = 1 << 15
MLX4_QP_BIT_RWE = 1 << 14
MLX4_QP_BIT_RAE = 1 << 13
MLX4_QP_BIT_RIC = 1 << 4
MLX4_QP_BIT_FPP = 1 << 3

# QP commands (cmd.h). Each takes the QP number in the low 24 bits of the input modifier;
# the transitions carry a QPContextMailbox as inbox, QUERY_QP returns one as outbox.
MLX4_CMD_RST2INIT_QP = 0x19
MLX4_CMD_INIT2RTR_QP = 0x1A
MLX4_CMD_RTR2RTS_QP = 0x1B
MLX4_CMD_RTS2RTS_QP = 0x1C
MLX4_CMD_SQERR2RTS_QP = 0x1D
MLX4_CMD_2ERR_QP = 0x1E
MLX4_CMD_RTS2SQD_QP = 0x1F
MLX4_CMD_SQD2RTS_QP = 0x20
MLX4_CMD_2RST_QP = 0x21
MLX4_CMD_QUERY_QP = 0x22
MLX4_CMD_INIT2INIT_QP = 0x2D
MLX4_CMD_SQD2SQD_QP = 0x38

TRANSITIONS = {
    "RST2INIT": MLX4_CMD_RST2INIT_QP,
    "INIT2INIT": MLX4_CMD_INIT2INIT_QP,
    "INIT2RTR": MLX4_CMD_INIT2RTR_QP,
    "RTR2RTS": MLX4_CMD_RTR2RTS_QP,
    "RTS2RTS": MLX4_CMD_RTS2RTS_QP,
    "SQERR2RTS": MLX4_CMD_SQERR2RTS_QP,
    "2ERR": MLX4_CMD_2ERR_QP,
    "RTS2SQD": MLX4_CMD_RTS2SQD_QP,
    "SQD2SQD": MLX4_CMD_SQD2SQD_QP,
    "SQD2RTS": MLX4_CMD_SQD2RTS_QP,
    "2RST": MLX4_CMD_2RST_QP,
    "QUERY": MLX4_CMD_QUERY_QP,
}
TRANSITION_NAMES = {opcode: name for name, opcode in TRANSITIONS.items()}


def transition_name(opcode: int) -> str:
    """'INIT2RTR' for 0x1a; 'Cmd0x...' for an opcode that is not a QP command."""
    return TRANSITION_NAMES.get(opcode, f"Cmd0x{opcode:03x}")


QP_PATH_SIZE = 44
QP_CONTEXT_SIZE = 248
MBOX_SIZE = 256

QPPath = Struct(
    "fl" / Int8ub,
    "vlan_control" / Int8ub,  # 3.7: reserved1[0]; mainline: union { vlan_control; control; }
    "disable_pkey_check" / Int8ub,  # 3.7: reserved1[1]
    "pkey_index" / Int8ub,
    "counter_index" / Int8ub,
    "grh_mylmc" / Int8ub,
    "rlid" / Int16ub,
    "ackto" / Int8ub,
    "mgid_index" / Int8ub,  # bit 7 on a UD QP: take the source GID index from here, not the WQE
    "static_rate" / Int8ub,
    "hop_limit" / Int8ub,
    "tclass_flowlabel" / Int32ub,
    "rgid" / Bytes(16),
    "sched_queue" / Int8ub,  # bit 6: port - 1
    "vlan_index" / Int8ub,
    "feup" / Int8ub,
    "fvl_rx" / Int8ub,  # 3.7: reserved3
    "reserved4" / Bytes(2),
    "dmac" / Bytes(6),
)
QPPath.__doc__ = """mlx4 address path, 44 bytes (struct mlx4_qp_path, include/linux/mlx4/qp.h)."""

QPContext = Struct(
    "flags" / Int32ub,  # state 31:28, service type 23:16, PM state 12:11: see qp_state() and friends
    "pd" / Int32ub,
    "mtu_msgmax" / Int8ub,
    "rq_size_stride" / Int8ub,
    "sq_size_stride" / Int8ub,
    "rlkey_roce_mode" / Int8ub,  # 3.7: rlkey
    "usr_page" / Int32ub,
    "local_qpn" / Int32ub,
    "remote_qpn" / Int32ub,
    "pri_path" / QPPath,  # 0x18
    "alt_path" / QPPath,  # 0x44
    "params1" / Int32ub,  # 0x70
    "reserved1" / Bytes(4),
    "next_send_psn" / Int32ub,
    "cqn_send" / Int32ub,
    "roce_entropy" / Int16ub,  # 3.7: first two bytes of u32 reserved2[2]
    "reserved2" / Bytes(6),  # 3.7: rest of reserved2[2]; mainline: __be16 reserved2[3]
    "last_acked_psn" / Int32ub,
    "ssn" / Int32ub,
    "params2" / Int32ub,  # 0x90
    "rnr_nextrecvpsn" / Int32ub,
    "xrcd" / Int32ub,
    "cqn_recv" / Int32ub,
    "db_rec_addr" / Int64ub,
    "qkey" / Int32ub,  # 0xA8
    "srqn" / Int32ub,
    "msn" / Int32ub,
    "rq_wqe_counter" / Int16ub,
    "sq_wqe_counter" / Int16ub,
    "reserved3" / Bytes(4),  # 3.7: reserved3[0] of u32 reserved3[2]
    "rate_limit_params" / Int16ub,  # 0xBC; 3.7: first half of reserved3[1]
    "reserved4" / Int8ub,  # 3.7: part of reserved3[1]
    "qos_vport" / Int8ub,  # 3.7: last byte of reserved3[1]
    "param3" / Int32ub,
    "nummmcpeers_basemkey" / Int32ub,
    "log_page_size" / Int8ub,
    "reserved5" / Bytes(2),  # 3.7: reserved4[2]
    "mtt_base_addr_h" / Int8ub,
    "mtt_base_addr_l" / Int32ub,
    "reserved6" / Bytes(40),  # 3.7: u32 reserved5[10]
)
QPContext.__doc__ = """mlx4 QP context, 248 bytes (struct mlx4_qp_context, include/linux/mlx4/qp.h)."""

QPContextMailbox = Struct(
    "optpar" / Int32ub,
    "resv" / Bytes(4),
    "context" / QPContext,
)
QPContextMailbox.__doc__ = """Inbox of an mlx4 QP state transition (and outbox of QUERY_QP), 256 bytes:
optpar (enum mlx4_qp_optpar, be32), 4 reserved bytes, struct mlx4_qp_context at 8
(mlx4_qp_modify() in drivers/net/ethernet/mellanox/mlx4/qp.c)."""


def compiled_mailbox():
    """QPContextMailbox compiled once, for trusted batch decode."""
    return compiled(QPContextMailbox)


def _unwrap(con):
    """The construct inside a named field (Renamed and similar wrappers)."""
    while not isinstance(con, Struct) and hasattr(con, "subcon"):
        con = con.subcon
    return con


def leaf_fields(schema=QPContextMailbox, prefix: str = "", base: int = 0):
    """Every leaf field of a fixed-size Struct as (dotted name, byte offset, size, construct), in order."""
    out = []
    offset = base
    for sub in schema.subcons:
        inner = _unwrap(sub)
        name = prefix + sub.name
        if isinstance(inner, Struct):
            out.extend(leaf_fields(inner, name + ".", offset))
        else:
            out.append((name, offset, sub.sizeof(), inner))
        offset += sub.sizeof()
    return out


def _locate(path: str, schema):
    """(byte offset, construct) of a dotted field path inside a fixed-size Struct."""
    offset = 0
    con = schema
    for part in path.split("."):
        if not isinstance(con, Struct):
            raise KeyError(f"{path}: {part!r} is below a leaf field")
        for sub in con.subcons:
            if sub.name == part:
                con = _unwrap(sub)
                break
            offset += sub.sizeof()
        else:
            raise KeyError(f"{path}: no field {part!r}")
    return offset, con


def field_offset(path: str, schema=QPContextMailbox) -> int:
    """Byte offset of a dotted field path, computed from the schema: 'context.pri_path.pkey_index' -> 35."""
    return _locate(path, schema)[0]


def field_size(path: str, schema=QPContextMailbox) -> int:
    """Size in bytes of a dotted field path: 'context.qkey' -> 4, 'context.pri_path' -> 44."""
    return _locate(path, schema)[1].sizeof()


def _be_byte(path: str, lsb: int) -> int:
    """Mailbox byte holding bit ``lsb`` (0 = least significant) of a big-endian field."""
    return field_offset(path) + field_size(path) - 1 - lsb // 8


MBOX_OPTPAR = field_offset("optpar")
MBOX_CONTEXT = field_offset("context")
MBOX_FLAGS = field_offset("context.flags")
MBOX_SERVICE_TYPE = _be_byte("context.flags", 16)  # flags bits 23:16
MBOX_PRI_PATH = field_offset("context.pri_path")
MBOX_PRI_PKEY_INDEX = field_offset("context.pri_path.pkey_index")
MBOX_PRI_MGID_INDEX = field_offset("context.pri_path.mgid_index")
MBOX_PRI_SCHED_QUEUE = field_offset("context.pri_path.sched_queue")
MBOX_ALT_PATH = field_offset("context.alt_path")
MBOX_ALT_PKEY_INDEX = field_offset("context.alt_path.pkey_index")
MBOX_ALT_MGID_INDEX = field_offset("context.alt_path.mgid_index")
MBOX_ALT_SCHED_QUEUE = field_offset("context.alt_path.sched_queue")
MBOX_PARAMS2_FPP = _be_byte("context.params2", 3)  # MLX4_QP_BIT_FPP
MBOX_QKEY = field_offset("context.qkey")
MBOX_RATE_LIMIT = field_offset("context.rate_limit_params")

_MAILBOX_LEAVES = leaf_fields()


def qp_state(flags: int) -> int:
    """enum mlx4_qp_state from the context's flags (bits 31:28)."""
    return (flags >> 28) & 0xF


def service_type(flags: int) -> int:
    """MLX4_QP_ST_* from the context's flags (bits 23:16), as resource_tracker.c reads it."""
    return (flags >> 16) & 0xFF


def pm_state(flags: int) -> int:
    """MLX4_QP_PM_* from the context's flags (bits 12:11)."""
    return (flags >> 11) & 0x3


def sched_queue_port(sched_queue: int) -> int:
    """1-based port number of an address path's sched_queue (bit 6 is port - 1)."""
    return ((sched_queue >> 6) & 1) + 1


def describe_diff(old: bytes, new: bytes) -> list[tuple[str, int, int]]:
    """(dotted field name, old value, new value) for every leaf field of two mailboxes that differs.

    In mailbox order. Byte-array fields (rgid, dmac, reserved) count as one big-endian integer.
    Both arguments must be exactly MBOX_SIZE bytes (slice a 4096-byte command buffer first).
    """
    for which, data in (("old", old), ("new", new)):
        if len(data) != MBOX_SIZE:
            raise DecodeError(f"{which} QP-context mailbox is {len(data)} bytes, expected {MBOX_SIZE}")
    out = []
    for name, offset, size, _ in _MAILBOX_LEAVES:
        a = old[offset:offset + size]
        b = new[offset:offset + size]
        if a != b:
            out.append((name, int.from_bytes(a, "big"), int.from_bytes(b, "big")))
    return out
