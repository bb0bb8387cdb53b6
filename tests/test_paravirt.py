"""mlx4 QP-context paravirtualization: golden cases from the spec, kernels == reference bit for bit.

Golden values are written from the spec (../shared/spec/mlx4-paravirt.md) and from
resource_tracker.c / cmd.c (the seed commit for profile 3.7, mainline for profile new), not from
the code under test. The kernel/reference comparisons cover every transition, service type,
optpar combination, P_Key index, function number (including bad ones) and QP number range.
"""
import functools
import json

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madpipe.codecs import qpc
from madpipe.pipeline.mlx4 import device_reference as device_ref
from madpipe.pipeline.mlx4 import eth_kernels as EK  # the kernels' constants live there
from madpipe.pipeline.mlx4 import paravirt
from madpipe.pipeline.mlx4 import paravirt_kernels as K
from madpipe.pipeline.mlx4 import paravirt_reference as ref
from madpipe.pipeline.mlx4.profiles import PROFILE_37, resolve
from madpipe.pipeline.mlx4.trace import RECORD, Trace, TraceError, read_trace, write_trace

P = 0x48                       # base_proxy_sqpn (base_sqpn 0x40 + 8)
T = P + 8 * 80                 # base_tunnel_sqpn
ALL = list(paravirt.TRANSITIONS)
CODES = np.array(list(paravirt.TRANSITION_NAMES), dtype=np.uint8)
VERIFYING = ["INIT2RTR", "RTR2RTS", "RTS2RTS", "SQD2SQD", "SQD2RTS"]
UNTOUCHED = ["2ERR", "2RST", "RTS2SQD", "QUERY"]
RC, UC, UD, XRC, MLX = 0, 1, 3, 6, 7
JIT = not numba.config.DISABLE_JIT


def init_v2p(num_vfs=79, master=0, functions=80):
    """init_pkeys (main.c at the seed): identity for the master, 0 -> 0 and the rest -> 127;
    ``functions`` rows (MLX4_MFUNC_MAX: 80 at 3.7, 128 on mainline)."""
    v2p = np.zeros((functions, 2, 128), dtype=np.uint8)
    for slave in range(num_vfs + 1):
        for port in range(2):
            v2p[slave, port] = np.arange(128) if slave == master else 127
            v2p[slave, port, 0] = 0
    return v2p


def mailbox(st=UD, optpar=0, pkey_index=0, port=1, mgid=0, alt_mgid=0, alt_port=1, qkey=0x11111111,
            rate_limit=0, params2=0, fill=0):
    """A QP-context mailbox with the fields the rewrites read (offsets from the spec's table)."""
    m = np.full(256, fill, dtype=np.uint8)
    m[0:4] = list(optpar.to_bytes(4, "big"))
    m[8:12] = list(((3 << 28) | (st << 16)).to_bytes(4, "big"))   # flags: state, service type
    m[35] = pkey_index
    m[41] = mgid
    m[64] = 0x83 | ((port - 1) << 6)                               # sched_queue
    m[79] = 0x55                                                   # alt pkey_index: never touched
    m[85] = alt_mgid
    m[108] = 0x83 | ((alt_port - 1) << 6)
    m[152:156] = list(params2.to_bytes(4, "big"))
    m[176:180] = list(qkey.to_bytes(4, "big"))
    m[196:198] = list(rate_limit.to_bytes(2, "big"))
    return m


def sized(v2p, profile):
    """``v2p`` with the profile's MLX4_MFUNC_MAX rows: the rows past 80 of a mainline table are those
    init_pkeys leaves for functions past num_vfs (zero)."""
    rows = resolve(profile).mfunc_max
    if v2p.shape[0] < rows:
        v2p = np.concatenate([v2p, np.zeros((rows - v2p.shape[0], 2, 128), np.uint8)])
    return np.ascontiguousarray(v2p[:rows])


def one(m, transition, slave, qpn=0x1234, v2p=None, **kw):
    """Rewrite one mailbox with the kernel and the reference; require equality; return (row, rc, f).
    An 80-row ``v2p`` is extended to a mainline profile's 128 rows (:func:`sized`)."""
    v2p = sized(init_v2p() if v2p is None else v2p, kw.get("profile", "3.7"))
    kw.setdefault("base_proxy_sqpn", P)
    box = np.ascontiguousarray(m.reshape(1, 256))
    out, rc, f = paravirt.rewrite(box, transition, slave, qpn, v2p, return_findings=True, **kw)
    r_out, r_rc, r_f = paravirt.rewrite_reference(box, transition, slave, qpn, v2p, return_findings=True, **kw)
    assert (out == r_out).all() and (rc == r_rc).all() and (f == r_f).all()
    return out[0], int(rc[0]), int(f[0])


def changed(a, b):
    return [int(i) for i in np.flatnonzero(a != b)]


# -- constants ----------------------------------------------------------------------------------------

def test_kernel_constants_match_the_codec_and_reference():
    for name in ("MBOX_OPTPAR", "MBOX_SERVICE_TYPE", "MBOX_PRI_PKEY_INDEX", "MBOX_PRI_MGID_INDEX",
                 "MBOX_PRI_SCHED_QUEUE", "MBOX_ALT_MGID_INDEX", "MBOX_ALT_SCHED_QUEUE",
                 "MBOX_PARAMS2_FPP", "MBOX_QKEY", "MBOX_RATE_LIMIT", "MBOX_SIZE"):
        assert getattr(EK, name) == getattr(qpc, name), name
    for name, code in qpc.TRANSITIONS.items():
        assert getattr(EK, "TRANSITION_" + name) == code == paravirt.TRANSITIONS[name]
    assert (EK.ST_RC, EK.ST_UC, EK.ST_UD, EK.ST_XRC, EK.ST_MLX) == (
        qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC, qpc.MLX4_QP_ST_UD, qpc.MLX4_QP_ST_XRC, qpc.MLX4_QP_ST_MLX)
    assert (EK.OPTPAR_ALT_ADDR_PATH, EK.OPTPAR_PRIMARY_ADDR_PATH, EK.OPTPAR_SCHED_QUEUE) == (
        qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH, qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH, qpc.MLX4_QP_OPTPAR_SCHED_QUEUE)
    for name in ("RC_OK", "RC_EPERM", "RC_EINVAL", "RC_REFUSED", "RC_UNKNOWN_OPCODE",
                 "FINDING_NONE", "FINDING_SPILL", "FINDING_REFUSED"):
        assert getattr(EK, name) == getattr(device_ref, name), name
    assert (EK.RC_EPERM, EK.RC_EINVAL, EK.RC_REFUSED) == (-1, -22, -34)
    assert paravirt.base_tunnel_sqpn(P) == T


# -- golden cases from the spec -----------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["3.7", "new"])
@pytest.mark.parametrize("port", [1, 2])
def test_init2rtr_ud_slave3(profile, port):
    v2p = init_v2p()
    v2p[3, port - 1, 5] = 40 + port            # vm row: index 5 -> physical 41 / 42
    m = mailbox(st=UD, pkey_index=5, port=port, mgid=0x07)
    out, rc, f = one(m, "INIT2RTR", 3, v2p=v2p, profile=profile)
    assert (rc, f) == (0, 0)
    assert out[41] == 0x83                     # 0x80 | slave: UD forces the mgid from the context
    assert out[35] == 40 + port                # through the row of the sched_queue's port
    assert out[79] == 0x55                     # alternate pkey_index never touched
    assert changed(m, out) == [35, 41]


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_rc_gid_index_from_optpar(profile):
    m = mailbox(st=RC, optpar=0x80, mgid=0, alt_mgid=0x33)
    out, rc, _ = one(m, "RTR2RTS", 5, profile=profile)
    assert rc == 0 and out[41] == 5 and out[85] == 0x33
    m = mailbox(st=RC, optpar=0x01, mgid=0x22, alt_mgid=0)
    out, rc, _ = one(m, "RTR2RTS", 5, profile=profile)
    assert rc == 0 and out[41] == 0x22 and out[85] == 5
    m = mailbox(st=UC, optpar=0x81)
    out, rc, _ = one(m, "SQD2RTS", 77, profile=profile)
    assert rc == 0 and out[41] == out[85] == 77
    m = mailbox(st=RC, optpar=0, mgid=9, alt_mgid=9)     # no address path: gid untouched
    out, rc, _ = one(m, "INIT2RTR", 5, profile=profile)
    assert rc == 0 and out[41] == out[85] == 9


@pytest.mark.parametrize("profile", ["3.7", "new"])
@pytest.mark.parametrize("transition", VERIFYING)
def test_verify_rejects_nonzero_gid_index_for_a_slave(profile, transition):
    for st_, optpar, mgid, alt in ((RC, 0x80, 1, 0), (UC, 0x01, 0, 2), (RC, 0x81, 3, 3)):
        m = mailbox(st=st_, optpar=optpar, mgid=mgid, alt_mgid=alt)
        out, rc, f = one(m, transition, 2, profile=profile)
        assert (rc, f) == (-22, 0) and (out == m).all()
    # the same from the master passes the primary check
    out, rc, _ = one(mailbox(st=RC, optpar=0x80, mgid=1), transition, 0, profile=profile)
    assert rc == 0


@pytest.mark.parametrize("transition", VERIFYING)
def test_missing_braces_at_37_check_the_masters_alternate_path(transition):
    m = mailbox(st=RC, optpar=0x01, alt_mgid=4)
    out, rc, _ = one(m, transition, 0, profile="3.7")
    assert rc == -22 and (out == m).all()
    out, rc, _ = one(m, transition, 0, profile="new")
    assert rc == 0 and out[85] == 0            # master: slave & 0x7f


def test_verify_ignores_ud_and_non_address_path_transitions():
    m = mailbox(st=UD, optpar=0x81, mgid=5, alt_mgid=5)
    assert one(m, "INIT2RTR", 4)[1] == 0
    m = mailbox(st=RC, optpar=0x81, mgid=5, alt_mgid=5)
    for transition in ("RST2INIT", "INIT2INIT", "SQERR2RTS"):
        assert one(m, transition, 4)[1] == 0


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_sqerr2rts_only_qkey(profile):
    m = mailbox(st=UD, pkey_index=9, mgid=3, optpar=0x81, fill=0xA5)
    m[64] = 0x83
    out, rc, _ = one(m, "SQERR2RTS", 3, qpn=P + 8 * 3 + 2, profile=profile)
    assert rc == 0 and changed(m, out) == [176, 177, 178, 179]
    assert int.from_bytes(out[176:180].tobytes(), "big") == 0xFFFF0000 + 8 * 3 + 2
    out, rc, _ = one(m, "SQERR2RTS", 3, qpn=P - 1, profile=profile)
    assert rc == 0 and (out == m).all()


@pytest.mark.parametrize("profile", ["3.7", "new"])
@pytest.mark.parametrize("transition", UNTOUCHED)
def test_commands_without_inbox_rewrite_are_untouched(profile, transition):
    rng = np.random.default_rng(7)
    boxes = rng.integers(0, 256, (64, 256), dtype=np.uint8)
    slaves = rng.integers(-100, 1000, 64).astype(np.int32)
    v2p = init_v2p(functions=resolve(profile).mfunc_max)
    out, rc, f = paravirt.rewrite(boxes, transition, slaves, P + 1, v2p, base_proxy_sqpn=P,
                                  profile=profile, return_findings=True)
    assert (out == boxes).all() and not rc.any() and not f.any()


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_proxy_and_tunnel_twins_share_the_qkey(profile):
    f = resolve(profile).mfunc_max              # T = P + 8 * MLX4_MFUNC_MAX: 640 at 3.7, 1024 on mainline
    t = P + 8 * f
    m = mailbox(st=UD)
    for qpn in (P + 8 * 3 + 1, t + 8 * 3 + 1, (0xAB << 24) | (t + 8 * 3 + 1)):
        out, rc, _ = one(m, "INIT2RTR", 3, qpn=qpn, profile=profile)
        assert rc == 0 and int.from_bytes(out[176:180].tobytes(), "big") == 0xFFFF0000 + 8 * 3 + 1
    last = 8 * f - 1
    edges = {P: 0xFFFF0000, t - 1: 0xFFFF0000 + last, t: 0xFFFF0000, t + last: 0xFFFF0000 + last}
    for qpn, qkey in edges.items():
        out, _, _ = one(m, "RST2INIT", 0, qpn=qpn, profile=profile)
        assert int.from_bytes(out[176:180].tobytes(), "big") == qkey
    for qpn in (P - 1, t + 8 * f, 0, 0xFFFFFF):
        out, _, _ = one(m, "RST2INIT", 0, qpn=qpn, profile=profile)
        assert int.from_bytes(out[176:180].tobytes(), "big") == 0x11111111


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_pkey_index_past_the_row_reads_the_next_row(profile):
    v2p = np.arange(80 * 2 * 128, dtype=np.int64).reshape(80, 2, 128).astype(np.uint8) ^ 0x5A
    m = mailbox(st=UD, pkey_index=200, port=1)
    out, rc, f = one(m, "INIT2INIT", 4, v2p=v2p, profile=profile)
    assert (rc, f) == (0, 1) and out[35] == v2p[4, 1, 72]          # port 2's row
    m = mailbox(st=UD, pkey_index=200, port=2)
    out, rc, f = one(m, "RTS2RTS", 4, v2p=v2p, profile=profile)
    assert (rc, f) == (0, 1) and out[35] == v2p[5, 0, 72]          # the next function's port 1
    out, rc, f = one(mailbox(pkey_index=127, port=2), "INIT2INIT", 79, v2p=v2p, profile=profile)
    assert (rc, f) == (0, 0) and out[35] == v2p[79, 1, 127]        # last byte of the table


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_reads_outside_the_table_are_refused(profile):
    m = mailbox(st=UD, pkey_index=200, port=2)
    last = resolve(profile).mfunc_max - 1       # the last function: 79 at 3.7, 127 on mainline
    for slave, pkey_index, transition in ((last, 200, "INIT2RTR"), (last + 1, 0, "INIT2INIT"), (-1, 0, "SQD2SQD"),
                                          (1000, 5, "INIT2INIT"), (-(2 ** 31), 0, "INIT2INIT"),
                                          (2 ** 31 - 1, 255, "INIT2INIT")):
        m[35] = pkey_index
        out, rc, f = one(m, transition, slave, profile=profile)
        if profile == "new" and transition != "INIT2INIT" and not 0 <= slave <= last:
            # mainline's adjust_qp_sched_queue finds no port for a function that does not exist
            assert (rc, f) == (-22, 0) and (out == m).all(), slave
        else:
            assert (rc, f) == (paravirt.RC_REFUSED, 2) and (out == m).all(), slave
    out, rc, f = one(m, "SQERR2RTS", 1000, qpn=P, profile="3.7")   # no table read: fine
    assert (rc, f) == (0, 0)


def test_operators_manual_scenario():
    phys = np.zeros(128, dtype=np.uint16)
    phys[:3] = [0xFFFF, 0xB000, 0xB030]
    v2p = init_v2p(num_vfs=2, functions=128)
    v2p[1, 0, 0], v2p[1, 0, 1] = 1, 0          # vm1: pkey_idx 0 -> 1, 1 -> 0
    v2p[2, 0, 0], v2p[2, 0, 1] = 2, 0          # vm2: pkey_idx 0 -> 2, 1 -> 0
    ipoib = mailbox(st=UD, pkey_index=0, port=1)
    for slave, index, pkey in ((1, 1, 0xB000), (2, 2, 0xB030), (0, 0, 0xFFFF)):
        for profile in ("3.7", "new"):
            out, rc, _ = one(ipoib, "RST2INIT", slave, qpn=0x200, v2p=v2p, profile=profile)
            assert rc == 0 and out[35] == index and phys[out[35]] == pkey
    template = np.arange(256, dtype=np.uint8)
    for slave, head in ((1, [0xB000, 0xFFFF]), (2, [0xB030, 0xFFFF]), (0, [0xFFFF, 0xB000, 0xB030])):
        mad = paravirt.virtual_pkey_getresp(phys, v2p, slave, 1, 0, template)
        pkeys = [int.from_bytes(mad[64 + 2 * i:66 + 2 * i].tobytes(), "big") for i in range(32)]
        assert pkeys == head + [0] * (32 - len(head))    # VFs' other entries: index 127, a 0 P_Key
        assert (mad[:64] == template[:64]).all() and (mad[128:] == template[128:]).all()


# -- mainline (profile new) ---------------------------------------------------------------------------

def test_new_clears_fpp_and_refuses_rate_limits_for_slaves():
    m = mailbox(st=UD, params2=0xFFFFFFFF)
    out, rc, _ = one(m, "INIT2RTR", 3, profile="new")
    assert rc == 0 and out[155] == 0xF7 and (out[152:155] == 0xFF).all()
    out, rc, _ = one(m, "INIT2RTR", 0, profile="new")
    assert rc == 0 and out[155] == 0xFF
    out, rc, _ = one(m, "INIT2RTR", 3, profile="3.7")
    assert rc == 0 and out[155] == 0xFF
    for rate in (1, 0x100):
        m = mailbox(st=UD, rate_limit=rate, params2=0xFF)
        out, rc, _ = one(m, "RTS2RTS", 3, profile="new")
        assert rc == -1 and (out == m).all()
        assert one(m, "RTS2RTS", 0, profile="new")[1] == 0
        assert one(m, "RTS2RTS", 3, profile="3.7")[1] == 0
        assert one(m, "RST2INIT", 3, profile="new")[1] == 0   # no verify on RST2INIT


def test_new_treats_xrc_like_rc():
    m = mailbox(st=XRC, optpar=0x80, mgid=0)
    assert one(m, "INIT2RTR", 6, profile="new")[0][41] == 6
    assert one(m, "INIT2RTR", 6, profile="3.7")[0][41] == 0
    m = mailbox(st=XRC, optpar=0x80, mgid=1)
    assert one(m, "INIT2RTR", 6, profile="new")[1] == -22
    assert one(m, "INIT2RTR", 6, profile="3.7")[1] == 0


def test_new_refuses_mlx_qp_on_reserved_qpn_at_init2rtr():
    m = mailbox(st=MLX, port=2)
    reserved = P - 8 + 3                        # QP1 of port 2 in base_sqpn's block
    assert one(m, "INIT2RTR", 5, qpn=reserved, profile="new")[1] == -1
    # base_sqpn + 8 + 16 * MLX4_MFUNC_MAX = P + 2048 on mainline
    assert one(m, "INIT2RTR", 5, qpn=P + 2047, profile="new")[1] == -1
    assert one(m, "INIT2RTR", 5, qpn=P + 2048, profile="new")[1] == 0
    assert one(m, "INIT2RTR", 5, qpn=P - 9, profile="new")[1] == 0
    assert one(m, "INIT2RTR", 5, qpn=P - 9, profile="new", fw_reserved_qps=P - 8)[1] == -1
    assert one(m, "INIT2RTR", 5, qpn=reserved | 0x800000, profile="new")[1] == -1   # & 0x7fffff
    assert one(m, "INIT2RTR", 0, qpn=reserved, profile="new")[1] == 0
    assert one(m, "RTR2RTS", 5, qpn=reserved, profile="new")[1] == 0
    assert one(m, "INIT2RTR", 5, qpn=reserved, profile="3.7")[1] == 0
    smi = np.zeros((128, 2), dtype=np.uint8)
    smi[5, 1] = 1                               # VF 5 may use SMI on port 2 only
    assert one(m, "INIT2RTR", 5, qpn=reserved, profile="new", smi_enabled=smi)[1] == 0
    assert one(mailbox(st=MLX, port=1), "INIT2RTR", 5, qpn=reserved, profile="new", smi_enabled=smi)[1] == -1


def test_new_maps_a_single_port_vfs_port_to_its_physical_port():
    v2p = init_v2p()
    v2p[7, 0, 3], v2p[7, 1, 3] = 11, 22
    ports = np.full(128, 3, dtype=np.uint8)
    ports[7] = 0b10                             # VF 7 owns physical port 2 only
    m = mailbox(st=UD, pkey_index=3, port=1)
    out, rc, _ = one(m, "INIT2RTR", 7, v2p=v2p, profile="new", active_ports=ports)
    assert rc == 0 and out[64] == 0x83 | 0x40 and out[35] == 22
    out, rc, _ = one(m, "INIT2RTR", 7, v2p=v2p, profile="3.7", active_ports=ports[:80])
    assert rc == 0 and out[64] == 0x83 and out[35] == 11
    out, rc, _ = one(mailbox(st=UD, port=2), "RTR2RTS", 7, profile="new", active_ports=ports)
    assert rc == -22                            # its port 2 does not exist
    m = mailbox(st=RC, optpar=0x01, alt_port=1)
    out, rc, _ = one(m, "SQD2RTS", 7, profile="new", active_ports=ports)
    assert rc == 0 and out[108] == 0x83 | 0x40
    ports[7] = 0                                # not a function at all
    assert one(mailbox(), "SQERR2RTS", 7, profile="new", active_ports=ports)[1] == -22
    assert one(mailbox(), "INIT2INIT", 7, profile="new", active_ports=ports)[1] == 0
    ports[0] = 0                                # function 0 always has every port
    assert one(mailbox(port=2), "RST2INIT", 0, profile="new", active_ports=ports)[1] == 0
    assert one(mailbox(), "RST2INIT", 128, profile="new")[1] == -22   # no such VF: before the read


def test_new_leaves_a_zero_sched_queue_alone_without_optpar():
    ports = np.full(128, 0b10, dtype=np.uint8)
    m = mailbox(st=UD)
    m[64] = 0
    out, rc, _ = one(m, "RTR2RTS", 4, profile="new", active_ports=ports)
    assert rc == 0 and out[64] == 0
    m[0:4] = [0, 1, 0, 0]                       # MLX4_QP_OPTPAR_SCHED_QUEUE
    out, rc, _ = one(m, "RTR2RTS", 4, profile="new", active_ports=ports)
    assert rc == 0 and out[64] == 0x40


# -- virtualized SubnGetResp(P_KeyTable) --------------------------------------------------------------

def pkeys_of(mad):
    return [int.from_bytes(bytes(mad[64 + 2 * i:66 + 2 * i]), "big") for i in range(32)]


def test_getresp_blocks_past_the_row():
    phys = (np.arange(128, dtype=np.uint16) * 3 + 0x8001).astype(np.uint16)
    v2p = np.random.default_rng(3).integers(0, 128, (80, 2, 128), dtype=np.uint8)
    template = np.full(256, 0xEE, dtype=np.uint8)
    getresp = functools.partial(paravirt.virtual_pkey_getresp, profile="3.7")   # an 80-function table
    mad, f = getresp(phys, v2p, 9, 1, 5, template, return_finding=True)
    assert f == 1 and pkeys_of(mad) == [int(phys[x]) for x in v2p[9, 1, 32:64]]
    mad, f = getresp(phys, v2p, 9, 2, 3, template, return_finding=True)
    assert f == 0 and pkeys_of(mad) == [int(phys[x]) for x in v2p[9, 1, 96:128]]
    with pytest.raises(paravirt.Refused):
        getresp(phys, v2p, 79, 2, 4, template)
    with pytest.raises(paravirt.Refused):
        getresp(phys, v2p, 80, 1, 0, template)
    with pytest.raises(paravirt.Refused):
        getresp(phys, v2p, -1, 1, 0, template)
    # u32 arithmetic: block 2**27 reads block 0; block 2**27 - 1 runs no iteration at all
    mad, f = getresp(phys, v2p, 9, 1, 1 << 27, template, return_finding=True)
    assert f == 1 and pkeys_of(mad) == [int(phys[x]) for x in v2p[9, 0, 0:32]]
    mad, f = getresp(phys, v2p, 9, 1, (1 << 27) - 1, template, return_finding=True)
    assert f == 1 and (mad == template).all()
    with pytest.raises(paravirt.Refused):
        getresp(phys, v2p, 9, 1, 1 << 26, template)


def test_getresp_v2p_values_past_the_physical_table():
    getresp = paravirt.virtual_pkey_getresp
    phys = np.full(128, 0x7FFF, dtype=np.uint16)
    v2p = init_v2p(functions=128)
    template = np.zeros(256, dtype=np.uint8)
    v2p[1, 0, 1] = 159                          # inside the C's zeroed 160-entry table
    mad, f = getresp(phys, v2p, 1, 1, 0, template, return_finding=True)
    assert f == 1 and pkeys_of(mad)[:2] == [0x7FFF, 0]
    v2p[1, 0, 1] = 160
    with pytest.raises(paravirt.Refused, match="table"):
        getresp(phys, v2p, 1, 1, 0, template)


def test_getresp_arguments():
    phys, v2p, t = np.zeros(128, np.uint16), init_v2p(functions=128), np.zeros(256, np.uint8)
    with pytest.raises(ValueError, match="port_num"):
        paravirt.virtual_pkey_getresp(phys, v2p, 1, 3, 0, t)
    with pytest.raises(ValueError, match="block"):
        paravirt.virtual_pkey_getresp(phys, v2p, 1, 1, -1, t)
    with pytest.raises(ValueError, match="phys_table"):
        paravirt.virtual_pkey_getresp(phys.astype(np.int32), v2p, 1, 1, 0, t)
    with pytest.raises(ValueError, match="template_mad"):
        paravirt.virtual_pkey_getresp(phys, v2p, 1, 1, 0, t[:255])


# -- API ----------------------------------------------------------------------------------------------

def test_argument_errors_name_the_argument():
    boxes, v2p = np.zeros((2, 256), np.uint8), init_v2p()
    with pytest.raises(ValueError, match="mailboxes: expected dtype uint8"):
        paravirt.rewrite(boxes.astype(np.int16), "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match=r"mailboxes: expected shape \(N, 256\)"):
        paravirt.rewrite(np.zeros((2, 255), np.uint8), "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="mailboxes: must be C-contiguous"):
        paravirt.rewrite(np.zeros((256, 2), np.uint8).T, "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="v2p: expected shape"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, 0, v2p[:79], base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="transition: unknown name 'INIT2RTS'; valid: RST2INIT, INIT2INIT"):
        paravirt.rewrite(boxes, "INIT2RTS", 1, 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="transition: unknown name 'x'"):
        paravirt.rewrite(boxes, ["INIT2RTR", "x"], 1, 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="transition: unknown code 7"):
        paravirt.rewrite(boxes, np.array([0x1A, 7]), 1, 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="slave: expected integers"):
        paravirt.rewrite(boxes, "INIT2RTR", 1.5, 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match=r"slave: expected a scalar or shape \(2,\)"):
        paravirt.rewrite(boxes, "INIT2RTR", [1, 2, 3], 0, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="qpn: values must be in 0..4294967295"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, -1, v2p, base_proxy_sqpn=P)
    with pytest.raises(ValueError, match="base_proxy_sqpn: expected a multiple of 8"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P + 1)
    with pytest.raises(TypeError, match="base_proxy_sqpn"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, 0, v2p)
    with pytest.raises(ValueError, match="profile: expected one of '3.7', 'mainline', 'new' or a Profile"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P, profile="3.8")
    with pytest.raises(ValueError, match="master"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P, master=80)
    with pytest.raises(ValueError, match="active_ports"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P, active_ports=np.zeros(79, np.uint8))


def test_out_argument_errors():
    boxes = np.zeros((4, 256), np.uint8)
    v2p = init_v2p()
    kw = dict(base_proxy_sqpn=P)
    for out, why in ((np.zeros((3, 256), np.uint8), r"out: expected shape \(4, 256\)"),
                     (np.zeros((4, 256), np.int8), "out: expected dtype uint8"),
                     (np.zeros((4, 512), np.uint8)[:, ::2], "out: expected shape|C-contiguous"),
                     ([[0] * 256] * 4, "out: expected a numpy array")):
        with pytest.raises(ValueError, match=why):
            paravirt.rewrite(boxes, "INIT2RTR", 1, 0x100, v2p, out=out, **kw)
    ro = np.zeros_like(boxes)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: must be writeable"):
        paravirt.rewrite(boxes, "INIT2RTR", 1, 0x100, v2p, out=ro, **kw)
    both = np.zeros((5, 256), np.uint8)
    with pytest.raises(ValueError, match="overlaps mailboxes"):
        paravirt.rewrite(both[:4], "INIT2RTR", 1, 0x100, v2p, out=both[1:], **kw)


def test_per_row_arguments_and_inplace():
    rng = np.random.default_rng(11)
    boxes = rng.integers(0, 256, (6, 256), dtype=np.uint8)
    boxes[:, 196:198] = 0
    names = ["INIT2RTR", "RST2INIT", "QUERY", "SQD2SQD", "INIT2INIT", "SQERR2RTS"]
    slaves = [1, 2, 3, 200, 0, 5]
    qpns = np.array([P, T, 3, P + 9, 2 ** 32 - 1, T + 7], dtype=np.int64)
    v2p = init_v2p()
    keep = boxes.copy()
    out, rc, f = paravirt.rewrite(boxes, names, slaves, qpns, v2p, base_proxy_sqpn=P, return_findings=True)
    assert (boxes == keep).all()
    codes = np.array([paravirt.TRANSITIONS[x] for x in names], dtype=np.uint8)
    out2, rc2 = paravirt.rewrite(boxes, codes, np.array(slaves, np.int64), qpns, v2p, base_proxy_sqpn=P)
    assert (out2 == out).all() and (rc2 == rc).all()
    same, rc3, f3 = paravirt.rewrite_inplace(boxes, names, slaves, qpns, v2p, base_proxy_sqpn=P,
                                             return_findings=True)
    assert same is boxes and (boxes == out).all() and (rc3 == rc).all() and (f3 == f).all()
    assert rc[3] == paravirt.RC_REFUSED and (boxes[3] == keep[3]).all()
    empty = np.zeros((0, 256), np.uint8)
    out, rc = paravirt.rewrite(empty, "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P)
    assert out.shape == (0, 256) and rc.shape == (0,)


# -- kernels == reference ---------------------------------------------------------------------------

SLAVE_POOL = np.array([0, 1, 2, 3, 5, 78, 79, 80, 81, 127, 128, 255, 256, 256 + 3, 336, 65535,
                       -1, -2, -80, 2 ** 31 - 1, -(2 ** 31)], dtype=np.int64)
OPTPAR_POOL = np.array([0, 0x80, 0x01, 0x81, 0x10, 0x20, 0x30, 0x10000, 0x10080, 0x10001, 0x10081,
                        0xFFFFFFFF, 0xFFFFFF7E], dtype=np.uint64)
ST_POOL = np.array([RC, UC, 2, UD, XRC, MLX, 4, 0x13, 0xFF], dtype=np.uint8)


def random_commands(rng, n, p=P):
    """n random commands biased towards every branch of the rules."""
    boxes = rng.integers(0, 256, (n, 256), dtype=np.uint8)
    optpar = rng.choice(OPTPAR_POOL, n)
    rand32 = rng.integers(0, 2 ** 32, n, dtype=np.uint64)
    optpar = np.where(rng.random(n) < 0.1, rand32, optpar)
    boxes[:, 0:4] = optpar.astype(">u4").view(np.uint8).reshape(n, 4)
    boxes[:, 9] = rng.choice(ST_POOL, n)
    for offset in (41, 85):                                           # gid indices mostly 0
        boxes[:, offset] = np.where(rng.random(n) < 0.6, 0, boxes[:, offset])
    boxes[:, 64] = np.where(rng.random(n) < 0.1, 0, boxes[:, 64])   # sched_queue 0 sometimes
    for offset in (196, 197):                                          # rate limit mostly 0
        boxes[:, offset] = np.where(rng.random(n) < 0.85, 0, boxes[:, offset])
    codes = rng.choice(CODES, n)
    pick = rng.random(n)
    slaves = np.where(pick < 0.75, rng.integers(0, 80, n), rng.choice(SLAVE_POOL, n)).astype(np.int32)
    t = p + 640
    qpn_pool = np.array([p - 9, p - 8, p - 1, p, p + 1, p + 8 * 3 + 1, p + 639, t - 1, t, t + 1,
                         t + 8 * 3 + 1, t + 638, t + 639, t + 640, t + 641, 0, 1, 0x7FFFFF, 0x800000 | p,
                         0xFFFFFF, 0x1000000 | t, 0xFFFFFFFF], dtype=np.int64)
    pick = rng.random(n)
    qpns = np.where(pick < 0.4, rng.choice(qpn_pool, n),
                    np.where(pick < 0.8, rng.integers(p - 16, t + 656, n), rng.integers(0, 2 ** 32, n)))
    return boxes, codes, slaves, qpns.astype(np.uint32)


def device_options(rng, functions=80):
    ports = rng.choice(np.array([0, 1, 2, 3, 3, 3], dtype=np.uint8), functions)
    smi = (rng.random((functions, 2)) < 0.3).astype(np.uint8)
    return dict(active_ports=ports, smi_enabled=smi, fw_reserved_qps=int(rng.choice([0, 16, P - 8])))


def assert_same(boxes, codes, slaves, qpns, v2p, **kw):
    out, rc, f = paravirt.rewrite(boxes, codes, slaves, qpns, v2p, return_findings=True, **kw)
    r_out, r_rc, r_f = paravirt.rewrite_reference(boxes, codes, slaves, qpns, v2p, return_findings=True, **kw)
    bad = np.flatnonzero((out != r_out).any(axis=1) | (rc != r_rc) | (f != r_f))
    assert bad.size == 0, (f"row {bad[0]}: transition {paravirt.TRANSITION_NAMES[int(codes[bad[0]])]} slave "
                           f"{slaves[bad[0]]} qpn {qpns[bad[0]]:#x}: rc {rc[bad[0]]}/{r_rc[bad[0]]} finding "
                           f"{f[bad[0]]}/{r_f[bad[0]]} bytes {changed(out[bad[0]], r_out[bad[0]])}")
    inplace = boxes.copy()
    _, rc2, f2 = paravirt.rewrite_inplace(inplace, codes, slaves, qpns, v2p, return_findings=True, **kw)
    assert (inplace == out).all() and (rc2 == rc).all() and (f2 == f).all()
    given = np.full_like(boxes, 0xA5)  # a reused buffer: every byte must be written
    got, rc3, f3 = paravirt.rewrite(boxes, codes, slaves, qpns, v2p, return_findings=True, out=given, **kw)
    assert got is given and (given == out).all() and (rc3 == rc).all() and (f3 == f).all()
    same = boxes.copy()
    got, rc4 = paravirt.rewrite(same, codes, slaves, qpns, v2p, out=same, **kw)
    assert got is same and (same == out).all() and (rc4 == rc).all()
    return rc, f


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_kernel_equals_reference_on_a_large_random_batch(profile):
    n = 120_000
    rng = np.random.default_rng(20240 + len(profile))
    boxes, codes, slaves, qpns = random_commands(rng, n)
    v2p = rng.integers(0, 256, resolve(profile).v2p_shape, dtype=np.uint8)
    for master in (0, 5):
        rc, f = assert_same(boxes, codes, slaves, qpns, v2p, base_proxy_sqpn=P, master=master,
                            profile=profile, **device_options(rng, resolve(profile).mfunc_max))
        outcomes = set(np.unique(rc).tolist())
        assert {0, -22, -34} <= outcomes and set(np.unique(f).tolist()) == {0, 1, 2}
        if profile == "new":
            assert -1 in outcomes


@st.composite
def commands(draw):
    n = draw(st.integers(1, 12))
    p = 8 * draw(st.integers(1, 4000))
    rows = []
    for _ in range(n):
        box = bytearray(draw(st.binary(min_size=256, max_size=256)))
        optpar = draw(st.one_of(st.sampled_from(OPTPAR_POOL.tolist()), st.integers(0, 2 ** 32 - 1)))
        box[0:4] = optpar.to_bytes(4, "big")
        box[9] = draw(st.sampled_from(ST_POOL.tolist()))
        box[35] = draw(st.integers(0, 255))
        box[41] = draw(st.sampled_from([0, 0, 1, 0x80, 0xFF]))
        box[85] = draw(st.sampled_from([0, 0, 2, 0xFF]))
        box[196] = draw(st.sampled_from([0, 0, 0, 1]))
        box[197] = draw(st.sampled_from([0, 0, 0, 0x80]))
        code = draw(st.sampled_from(CODES.tolist()))
        slave = draw(st.one_of(st.integers(0, 79), st.sampled_from(SLAVE_POOL.tolist())))
        qpn = draw(st.one_of(st.integers(max(p - 16, 0), p + 1300), st.integers(0, 2 ** 32 - 1)))
        rows.append((bytes(box), code, slave, qpn))
    boxes = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.uint8).reshape(n, 256).copy()
    codes = np.array([r[1] for r in rows], dtype=np.uint8)
    slaves = np.array([r[2] for r in rows], dtype=np.int32)
    qpns = np.array([r[3] for r in rows], dtype=np.uint32)
    return boxes, codes, slaves, qpns, p


@settings(max_examples=200 if JIT else 60, deadline=None)
@given(cmds=commands(), seed=st.integers(0, 2 ** 32 - 1), profile=st.sampled_from(["3.7", "new"]),
       master=st.sampled_from([0, 0, 1, 79]))
@pytest.mark.slow
def test_kernel_equals_reference_hypothesis(cmds, seed, profile, master):
    boxes, codes, slaves, qpns, p = cmds
    rng = np.random.default_rng(seed)
    v2p = rng.integers(0, 256, resolve(profile).v2p_shape, dtype=np.uint8)
    assert_same(boxes, codes, slaves, qpns, v2p, base_proxy_sqpn=p, master=master, profile=profile,
                **device_options(rng, resolve(profile).mfunc_max))


def test_raw_kernel_unknown_opcode_matches_reference():
    boxes = np.random.default_rng(5).integers(0, 256, (3, 256), dtype=np.uint8)
    codes = np.array([0x00, 0x23, 0xFF], dtype=np.uint8)
    out = np.empty_like(boxes)
    rc = np.empty(3, np.int32)
    f = np.empty(3, np.int8)
    K.rewrite_kernel(boxes, out, codes, np.zeros(3, np.int32), np.zeros(3, np.uint32), init_v2p(), P, 0,
                     PROFILE_37.rules, PROFILE_37.mfunc_max, np.full(80, 3, np.uint8), np.zeros((80, 2), np.uint8),
                     0, np.ones(2, np.uint8), 79, paravirt.vport_state("3.7"), np.zeros((80, 2, 128), np.uint8),
                     rc, f)
    dev = device_ref.Device(init_v2p(), P)
    for i in range(3):
        r_out, r_rc, r_f = ref.modify_qp(dev, int(codes[i]), 0, 0, boxes[i].tobytes())
        assert out[i].tobytes() == r_out == boxes[i].tobytes() and rc[i] == r_rc == -38 and f[i] == r_f == 0


# -- traces ---------------------------------------------------------------------------------------------

def test_trace_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    boxes, codes, slaves, qpns = random_commands(rng, 50)
    slaves = np.abs(slaves) % 65536
    for binary, name in ((False, "t.jsonl"), (True, "t.bin")):
        path = tmp_path / name
        assert write_trace(path, codes, slaves, qpns, boxes, binary=binary) == 50
        trace = read_trace(path)
        assert isinstance(trace, Trace) and trace.n == 50
        assert (trace.transition == codes).all() and (trace.slave == slaves).all()
        assert (trace.in_mod == qpns).all() and (trace.mailbox == boxes).all()
        assert trace.slave.dtype == np.int32 and trace.in_mod.dtype == np.uint32
    raw = (tmp_path / "t.bin").read_bytes()
    assert len(raw) == 24 + 50 * 264 and RECORD.itemsize == 264
    first = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    assert list(first) == ["transition", "slave", "in_mod", "mailbox"] and len(first["mailbox"]) == 512
    trace = read_trace(tmp_path / "t.jsonl")
    out, rc = paravirt.rewrite(trace.mailbox, trace.transition, trace.slave, trace.in_mod, init_v2p(),
                               base_proxy_sqpn=P)
    assert out.shape == (50, 256)


def test_trace_errors_name_line_and_field(tmp_path):
    good = {"transition": "INIT2RTR", "slave": 1, "in_mod": 123, "mailbox": "00" * 256}
    cases = [
        ({**good, "transition": "INIT2RTS"}, "line 2: field transition: unknown \"INIT2RTS\""),
        ({**good, "slave": -1}, "line 2: field slave: expected 0..65535, got -1"),
        ({**good, "in_mod": "7"}, "line 2: field in_mod: expected an integer"),
        ({**good, "mailbox": "00" * 255}, "line 2: field mailbox: expected 512 hex digits, got 510"),
        ({**good, "mailbox": "0g" + "00" * 255}, "line 2: field mailbox: not hexadecimal"),
        ({k: v for k, v in good.items() if k != "in_mod"}, "line 2: field in_mod: missing"),
    ]
    for bad, message in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_trace(path)
    path.write_text(json.dumps(good) + "\n\n{oops\n")
    with pytest.raises(TraceError, match="line 3: not JSON"):
        read_trace(path)
    boxes = np.zeros((2, 256), np.uint8)
    write_trace(tmp_path / "t.bin", "RST2INIT", 1, 2, boxes, binary=True)
    raw = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-10])
    with pytest.raises(TraceError, match=r"record 2: truncated \(254 of 264 bytes\)"):
        read_trace(tmp_path / "cut.bin")
    (tmp_path / "op.bin").write_bytes(raw[:24 + 264] + b"\x07" + raw[24 + 265:])
    with pytest.raises(TraceError, match="record 2: field transition: unknown opcode 0x07"):
        read_trace(tmp_path / "op.bin")
    with pytest.raises(TraceError, match="slave: values must be in 0..65535"):
        write_trace(tmp_path / "x.bin", "RST2INIT", -1, 0, boxes, binary=True)
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.jsonl")
