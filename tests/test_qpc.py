"""mlx4 QP-context mailbox codec: layout against qp.h and the spec, round trips, per-field diffs."""
import struct

import pytest
from construct import Bytes
from helpers import common, strip
from hypothesis import given, settings
from hypothesis import strategies as st

from madpipe.codecs import qpc
from madpipe.codecs.errors import DecodeError
from madpipe.codecs.qpc import (
    MBOX_SIZE,
    QPContext,
    QPContextMailbox,
    QPPath,
    compiled_mailbox,
    describe_diff,
    field_offset,
    field_size,
    leaf_fields,
)

mailboxes = st.binary(min_size=MBOX_SIZE, max_size=MBOX_SIZE)
fast = settings(max_examples=150, deadline=None)


def test_sizes():
    assert QPPath.sizeof() == 44 == qpc.QP_PATH_SIZE
    assert QPContext.sizeof() == 248 == qpc.QP_CONTEXT_SIZE
    assert QPContextMailbox.sizeof() == 256 == MBOX_SIZE
    assert compiled_mailbox().sizeof() == 256


def test_offsets_the_model_uses():
    # Numbers from the spec's mailbox table and from resource_tracker.c (inbox->buf + 35, + 64).
    assert field_offset("optpar") == 0
    assert field_offset("context") == 8
    assert field_offset("context.pri_path") == 32
    assert field_offset("context.alt_path") == 76
    assert field_offset("context.pri_path.pkey_index") == 35
    assert field_offset("context.pri_path.mgid_index") == 41
    assert field_offset("context.pri_path.sched_queue") == 64
    assert field_offset("context.alt_path.pkey_index") == 79
    assert field_offset("context.alt_path.mgid_index") == 85
    assert field_offset("context.qkey") == 176
    assert field_offset("context.rate_limit_params") == 196
    assert field_size("context.rate_limit_params") == 2
    assert field_size("context.qkey") == 4
    # ...and the named constants are the same derived values.
    assert (qpc.MBOX_PRI_PKEY_INDEX, qpc.MBOX_PRI_MGID_INDEX, qpc.MBOX_PRI_SCHED_QUEUE) == (35, 41, 64)
    assert (qpc.MBOX_ALT_PKEY_INDEX, qpc.MBOX_ALT_MGID_INDEX) == (79, 85)
    assert (qpc.MBOX_QKEY, qpc.MBOX_RATE_LIMIT) == (176, 196)
    assert qpc.MBOX_SERVICE_TYPE == 9  # flags bits 23:16 = second byte of the be32 at 8
    assert qpc.MBOX_PARAMS2_FPP == 155  # params2 at 152, bit 3 in its last byte


# Offsets inside struct mlx4_qp_context, worked out by hand from mainline qp.h.
CONTEXT_LAYOUT = {
    "flags": 0x00, "pd": 0x04, "mtu_msgmax": 0x08, "rq_size_stride": 0x09, "sq_size_stride": 0x0A,
    "rlkey_roce_mode": 0x0B, "usr_page": 0x0C,
    "local_qpn": 0x10, "remote_qpn": 0x14, "pri_path": 0x18, "alt_path": 0x44, "params1": 0x70,
    "reserved1": 0x74, "next_send_psn": 0x78, "cqn_send": 0x7C, "roce_entropy": 0x80,
    "reserved2": 0x82, "last_acked_psn": 0x88, "ssn": 0x8C, "params2": 0x90,
    "rnr_nextrecvpsn": 0x94, "xrcd": 0x98, "cqn_recv": 0x9C, "db_rec_addr": 0xA0, "qkey": 0xA8,
    "srqn": 0xAC, "msn": 0xB0, "rq_wqe_counter": 0xB4, "sq_wqe_counter": 0xB6, "reserved3": 0xB8,
    "rate_limit_params": 0xBC, "reserved4": 0xBE, "qos_vport": 0xBF, "param3": 0xC0,
    "nummmcpeers_basemkey": 0xC4, "log_page_size": 0xC8, "reserved5": 0xC9,
    "mtt_base_addr_h": 0xCB, "mtt_base_addr_l": 0xCC, "reserved6": 0xD0,
}
PATH_LAYOUT = {
    "fl": 0, "vlan_control": 1, "disable_pkey_check": 2, "pkey_index": 3, "counter_index": 4,
    "grh_mylmc": 5, "rlid": 6, "ackto": 8, "mgid_index": 9, "static_rate": 10, "hop_limit": 11,
    "tclass_flowlabel": 12, "rgid": 16, "sched_queue": 32, "vlan_index": 33, "feup": 34,
    "fvl_rx": 35, "reserved4": 36, "dmac": 38,
}


@pytest.mark.parametrize("name,offset", sorted(CONTEXT_LAYOUT.items()))
def test_context_layout_matches_qp_h(name, offset):
    assert field_offset(name, QPContext) == offset


@pytest.mark.parametrize("name,offset", sorted(PATH_LAYOUT.items()))
def test_path_layout_matches_qp_h(name, offset):
    assert field_offset(name, QPPath) == offset


def test_leaves_tile_the_mailbox():
    leaves = leaf_fields()
    position = 0
    for name, offset, size, _ in leaves:
        assert offset == position, name
        position += size
    assert position == MBOX_SIZE
    assert len({name for name, *_ in leaves}) == len(leaves)


def test_unknown_field_path():
    with pytest.raises(KeyError):
        field_offset("context.pri_path.no_such_field")
    with pytest.raises(KeyError):
        field_offset("context.qkey.low")


def _path(**fields):
    value = {name: 0 for name in PATH_LAYOUT}
    value.update(rgid=bytes(16), reserved4=bytes(2), dmac=bytes(6))
    value.update(fields)
    return value


def _golden():
    """A VF's UD QP at INIT2RTR as the guest sent it (before the master's rewrites).

    Bytes are placed at the spec's mailbox offsets, independently of the schema.
    """
    m = bytearray(MBOX_SIZE)
    struct.pack_into(">I", m, 0, 0x0001_0030)  # optpar: SCHED_QUEUE | Q_KEY | PKEY_INDEX
    struct.pack_into(">I", m, 8, 0x2003_1800)  # flags: RTR, UD, PM migrated
    struct.pack_into(">I", m, 12, 0x0000_0004)  # pd
    m[16:20] = bytes([0x8C, 0x42, 0x42, 0x00])  # mtu 2048 / msgmax 12, rq and sq size/stride
    struct.pack_into(">I", m, 24, 0x0000_0048)  # local_qpn
    m[35] = 1  # pri_path.pkey_index: the guest's virtual index 1
    m[41] = 0  # pri_path.mgid_index
    m[64] = 0xC3  # pri_path.sched_queue: port 2
    struct.pack_into(">I", m, 8 + 0x7C, 0x0000_0085)  # cqn_send
    struct.pack_into(">I", m, 152, 0x0000_0008)  # params2: FPP
    struct.pack_into(">I", m, 8 + 0x9C, 0x0000_0086)  # cqn_recv
    struct.pack_into(">Q", m, 8 + 0xA0, 0x1234_5000)  # db_rec_addr
    struct.pack_into(">I", m, 176, 0x0000_000B)  # qkey
    struct.pack_into(">I", m, 8 + 0xCC, 0x00A5_0000)  # mtt_base_addr_l
    m[255] = 0x5A  # last reserved byte, kept as is
    return bytes(m)


GOLDEN_VALUE = {
    "optpar": 0x0001_0030,
    "resv": bytes(4),
    "context": {
        **{name: 0 for name in CONTEXT_LAYOUT},
        "flags": 0x2003_1800, "pd": 4, "mtu_msgmax": 0x8C, "rq_size_stride": 0x42,
        "sq_size_stride": 0x42, "local_qpn": 0x48, "cqn_send": 0x85, "params2": 8,
        "cqn_recv": 0x86, "db_rec_addr": 0x1234_5000, "qkey": 0xB, "mtt_base_addr_l": 0x00A5_0000,
        "reserved1": bytes(4), "reserved2": bytes(6), "reserved3": bytes(4), "reserved5": bytes(2),
        "reserved6": bytes(39) + b"\x5a",
        "pri_path": _path(pkey_index=1, sched_queue=0xC3),
        "alt_path": _path(),
    },
}


def test_golden_mailbox():
    parsed = common(QPContextMailbox, _golden(), GOLDEN_VALUE, size=MBOX_SIZE)
    flags = parsed.context.flags
    assert qpc.qp_state(flags) == qpc.MLX4_QP_STATE_RTR
    assert qpc.service_type(flags) == qpc.MLX4_QP_ST_UD
    assert qpc.pm_state(flags) == qpc.MLX4_QP_PM_MIGRATED
    assert qpc.sched_queue_port(parsed.context.pri_path.sched_queue) == 2
    assert _golden()[qpc.MBOX_SERVICE_TYPE] == qpc.MLX4_QP_ST_UD
    assert _golden()[qpc.MBOX_PARAMS2_FPP] & qpc.MLX4_QP_BIT_FPP


def test_golden_path_and_context():
    data = _golden()
    common(QPPath, data[32:76], GOLDEN_VALUE["context"]["pri_path"], size=44)
    common(QPContext, data[8:], GOLDEN_VALUE["context"], size=248)


@fast
@given(mailboxes)
def test_round_trip_plain_and_compiled(data):
    parsed = QPContextMailbox.parse(data)
    assert QPContextMailbox.build(parsed) == data
    parsed_c = compiled_mailbox().parse(data)
    assert strip(parsed_c) == strip(parsed)
    assert compiled_mailbox().build(parsed_c) == data


def _lookup(container, dotted):
    for part in dotted.split("."):
        container = container[part]
    return container


@fast
@given(mailboxes)
def test_leaf_values_are_big_endian_slices(data):
    # describe_diff reads leaves as big-endian slices; this ties it to what construct decodes.
    parsed = QPContextMailbox.parse(data)
    for name, offset, size, con in leaf_fields():
        raw = data[offset:offset + size]
        value = _lookup(parsed, name)
        assert value == (raw if isinstance(con, Bytes) else int.from_bytes(raw, "big")), name


@pytest.mark.parametrize(
    "offset,name",
    [
        (35, "context.pri_path.pkey_index"),
        (41, "context.pri_path.mgid_index"),
        (79, "context.alt_path.pkey_index"),
        (85, "context.alt_path.mgid_index"),
        (64, "context.pri_path.sched_queue"),
        (176, "context.qkey"),
        (155, "context.params2"),
        (9, "context.flags"),
    ],
)
def test_describe_diff_single_byte(offset, name):
    old = _golden()
    new = bytearray(old)
    new[offset] ^= 0x81
    start = field_offset(name)
    size = field_size(name)
    expected = (name, int.from_bytes(old[start:start + size], "big"), int.from_bytes(new[start:start + size], "big"))
    assert describe_diff(old, bytes(new)) == [expected]


def test_describe_diff_rewrites():
    # update_pkey_index (virtual 1 -> physical 3) and update_gid for a UD QP of slave 5.
    old = _golden()
    new = bytearray(old)
    new[qpc.MBOX_PRI_PKEY_INDEX] = 3
    new[qpc.MBOX_PRI_MGID_INDEX] = 0x80 | 5
    new[qpc.MBOX_QKEY:qpc.MBOX_QKEY + 4] = (0xFFFF_0012).to_bytes(4, "big")
    assert describe_diff(old, bytes(new)) == [
        ("context.pri_path.pkey_index", 1, 3),
        ("context.pri_path.mgid_index", 0, 0x85),
        ("context.qkey", 0xB, 0xFFFF_0012),
    ]
    assert describe_diff(old, old) == []


@fast
@given(mailboxes, st.integers(0, MBOX_SIZE - 1), st.integers(1, 255))
def test_describe_diff_finds_exactly_the_changed_field(data, offset, xor):
    new = bytearray(data)
    new[offset] ^= xor
    diff = describe_diff(data, bytes(new))
    assert len(diff) == 1
    name, old_value, new_value = diff[0]
    start, size = field_offset(name), field_size(name)
    assert start <= offset < start + size
    assert old_value == int.from_bytes(data[start:start + size], "big")
    assert new_value == int.from_bytes(new[start:start + size], "big")


def test_describe_diff_wrong_length():
    with pytest.raises(DecodeError, match="255 bytes"):
        describe_diff(bytes(255), bytes(256))
    with pytest.raises(DecodeError, match="new"):
        describe_diff(bytes(256), bytes(4096))


def test_constants_match_kernel_headers():
    assert (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC, qpc.MLX4_QP_ST_RD, qpc.MLX4_QP_ST_UD) == (0, 1, 2, 3)
    assert (qpc.MLX4_QP_ST_XRC, qpc.MLX4_QP_ST_MLX) == (6, 7)
    assert qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH == 0x1
    assert qpc.MLX4_QP_OPTPAR_PKEY_INDEX == 0x10
    assert qpc.MLX4_QP_OPTPAR_Q_KEY == 0x20
    assert qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH == 0x80
    assert qpc.MLX4_QP_OPTPAR_SCHED_QUEUE == 0x10000
    assert qpc.MLX4_QP_OPTPAR_COUNTER_INDEX == 0x100000
    assert qpc.TRANSITIONS == {
        "RST2INIT": 0x19, "INIT2INIT": 0x2D, "INIT2RTR": 0x1A, "RTR2RTS": 0x1B, "RTS2RTS": 0x1C,
        "SQERR2RTS": 0x1D, "2ERR": 0x1E, "RTS2SQD": 0x1F, "SQD2SQD": 0x38, "SQD2RTS": 0x20,
        "2RST": 0x21, "QUERY": 0x22,
    }
    assert qpc.transition_name(0x1A) == "INIT2RTR"
    assert qpc.transition_name(0x24) == "Cmd0x024"


def test_flag_helpers():
    flags = (qpc.MLX4_QP_STATE_SQD << 28) | (qpc.MLX4_QP_ST_XRC << 16) | (qpc.MLX4_QP_PM_REARM << 11)
    assert qpc.qp_state(flags) == qpc.MLX4_QP_STATE_SQD
    assert qpc.service_type(flags) == qpc.MLX4_QP_ST_XRC
    assert qpc.pm_state(flags) == qpc.MLX4_QP_PM_REARM
    assert qpc.sched_queue_port(0x83) == 1
    assert qpc.sched_queue_port(0xC3) == 2
