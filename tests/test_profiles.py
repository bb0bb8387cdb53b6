"""Kernel profiles: mainline's 128 functions, worked out by hand from the C (quoted), and derived profiles.

Every expected value below is computed in the comments from the lines of C they quote (mainline:
include/linux/mlx4/device.h, drivers/net/ethernet/mellanox/mlx4/{qp.c,main.c,mlx4.h,
resource_tracker.c}, drivers/infiniband/hw/mlx4/mad.c), not from the code under test.
"""
import dataclasses
import struct

import numpy as np
import pytest

from madpipe.pipeline.cli.main import main
from madpipe.pipeline.mlx4 import device_reference as device_ref
from madpipe.pipeline.mlx4 import eth_kernels, paravirt, profiles, snoop
from madpipe.pipeline.mlx4.profiles import MAINLINE, PROFILE_37, Profile, resolve

# device.h (mainline):
#     MLX4_MAX_NUM_PF = 16, MLX4_MAX_NUM_VF = 126, MLX4_MAX_NUM_VF_P_PORT = 64, MLX4_MFUNC_MAX = 128,
# device.h (3.7):
#     MLX4_MAX_NUM_PF = 16, MLX4_MAX_NUM_VF = 64, MLX4_MFUNC_MAX = 80,
# mlx4.h: #define MLX4_MAX_NUM_SLAVES (min(MLX4_MAX_NUM_PF + MLX4_MAX_NUM_VF, MLX4_MFUNC_MAX))
# main.c: dev->caps.sqp_demux = (mlx4_is_master(dev)) ? MLX4_MAX_NUM_SLAVES : 0;


def test_the_built_in_profiles_hold_the_headers_numbers():
    assert (MAINLINE.mfunc_max, MAINLINE.max_num_vf, MAINLINE.max_num_pf) == (128, 126, 16)
    assert (PROFILE_37.mfunc_max, PROFILE_37.max_num_vf) == (80, 64)
    assert MAINLINE.max_num_slaves == min(16 + 126, 128) == 128          # caps.sqp_demux
    assert PROFILE_37.max_num_slaves == min(16 + 64, 80) == 80
    assert MAINLINE.v2p_shape == (128, 2, 128) and PROFILE_37.v2p_shape == (80, 2, 128)
    assert resolve("new") is resolve("mainline") is MAINLINE and resolve("3.7") is PROFILE_37
    assert resolve(MAINLINE) is MAINLINE
    with pytest.raises(ValueError, match="profile: expected one of '3.7', 'mainline', 'new' or a Profile, got '4.0'"):
        resolve("4.0")
    # the kernels' rule bits are the profile module's
    for name in ("VERIFY_BRACES", "XRC_LIKE_RC", "CLEAR_FPP", "RATE_LIMIT_EPERM", "MLX_QP_RESERVED_EPERM",
                 "ADJUST_SCHED_QUEUE", "ETH_PORTS"):
        assert getattr(eth_kernels, f"RULE_{name}") == getattr(profiles, f"RULE_{name}")
    assert PROFILE_37.rules == 0 and MAINLINE.rules == 0b1111111


def test_derive_a_distro_profile_and_bad_ones():
    distro = MAINLINE.derive(name="distro-80", mfunc_max=80, max_num_vf=64)
    assert dataclasses.replace(MAINLINE, name="distro-80", mfunc_max=80, max_num_vf=64) == distro
    assert distro.rules == MAINLINE.rules and distro.v2p_shape == (80, 2, 128)
    with pytest.raises(dataclasses.FrozenInstanceError):
        distro.mfunc_max = 128  # type: ignore[misc]
    for change, message in ((dict(mfunc_max=129), "mfunc_max must be in 2..128"),
                            (dict(max_num_vf=128), "max_num_vf must be in 1..mfunc_max - 1 = 127"),
                            (dict(max_port_pkeys=64), "max_port_pkeys is 128 in every mlx4 kernel"),
                            (dict(clear_fpp=1), "clear_fpp must be True or False")):
        with pytest.raises(ValueError, match=message):
            MAINLINE.derive(**change)


# -- shapes and num_vfs -----------------------------------------------------------------------------

def test_mainline_shapes_are_128_x_2_x_128_and_num_vfs_0_to_126():
    for num_vfs in (0, 79, 80, 126):
        cache, v2p = snoop.init_pkeys(num_vfs=num_vfs, profile="mainline")
        assert v2p.shape == (128, 2, 128) and cache.shape == (2, 128)
        # init_pkeys: for (slave = 0; slave <= num_vfs; ++slave) ... i == 0 ? 0 : pkey_phys_table_len - 1
        assert (v2p[1:num_vfs + 1, :, 1:] == 127).all() and not v2p[num_vfs + 1:].any()
    with pytest.raises(ValueError, match=r"num_vfs must be in 0..126 \(MLX4_MAX_NUM_VF of profile mainline\), got 127"):
        snoop.init_pkeys(num_vfs=127, profile="mainline")
    with pytest.raises(ValueError, match=r"num_vfs must be in 0..64 \(MLX4_MAX_NUM_VF of profile 3.7\), got 79"):
        snoop.init_pkeys(num_vfs=79, profile="3.7")
    _, v2p80 = snoop.init_pkeys(num_vfs=4, profile="3.7")
    mads = np.zeros((1, 256), np.uint8)
    with pytest.raises(ValueError, match=r"v2p must have shape \[128, 2, 128\] for profile mainline "
                                         r"\(MLX4_MFUNC_MAX 128\), got \[80, 2, 128\]"):
        snoop.smp_snoop(snoop.init_pkeys(profile="mainline")[0], v2p80, mads, 1, 0, profile="mainline")
    with pytest.raises(ValueError, match=r"v2p: expected shape \(128, 2, 128\) for profile mainline"):
        paravirt.rewrite(np.zeros((1, 256), np.uint8), "INIT2RTR", 1, 0, v2p80, base_proxy_sqpn=0x48,
                         profile="mainline")
    with pytest.raises(ValueError, match=r"active_ports: expected shape \(128\) for profile mainline"):
        paravirt.rewrite(np.zeros((1, 256), np.uint8), "INIT2RTR", 1, 0, snoop.init_pkeys()[1], base_proxy_sqpn=0x48,
                         profile="mainline", active_ports=np.full(80, 3, np.uint8))


# -- tunnel and proxy QPs -----------------------------------------------------------------------------

def ud_mailbox(qkey=0x11111111, st=3, port=1):
    m = np.zeros((1, 256), np.uint8)
    m[0, 8:12] = list(((3 << 28) | (st << 16)).to_bytes(4, "big"))
    m[0, 64] = 0x83 | ((port - 1) << 6)
    m[0, 176:180] = list(qkey.to_bytes(4, "big"))
    return m


def qkey_after(qpn, profile, p=72):
    box = ud_mailbox()
    v2p = snoop.init_pkeys(num_vfs=1, profile=profile)[1]
    both = []
    for rewrite in (paravirt.rewrite, paravirt.rewrite_reference):
        out, rc = rewrite(box, "RST2INIT", 0, qpn, v2p, base_proxy_sqpn=p, profile=profile)
        assert rc[0] == 0
        both.append(int.from_bytes(out[0, 176:180].tobytes(), "big"))
    assert both[0] == both[1]
    return both[0]


def test_tunnel_and_proxy_ranges_qpn_1111_with_p_72():
    # qp.c:   dev->phys_caps.base_proxy_sqpn = dev->phys_caps.base_sqpn + 8;
    #         dev->phys_caps.base_tunnel_sqpn = dev->phys_caps.base_sqpn + 8 + 8 * MLX4_MFUNC_MAX;
    # main.c: if (qpn >= dev->phys_caps.base_tunnel_sqpn + 8 * MLX4_MFUNC_MAX ||
    #             qpn < dev->phys_caps.base_proxy_sqpn)
    #                 return -EINVAL;
    #         if (qpn >= dev->phys_caps.base_tunnel_sqpn)
    #                 qk += qpn - dev->phys_caps.base_tunnel_sqpn;   /* tunnel qp */
    #         else
    #                 qk += qpn - dev->phys_caps.base_proxy_sqpn;
    # P = 72: base_sqpn = 64. Mainline: T = 64 + 8 + 8 * 128 = 1096, the range ends at 1096 + 1024 = 2120.
    # qpn 1111 >= 1096: a tunnel QP, qk = 0xFFFF0000 + (1111 - 1096) = 0xFFFF000F.
    assert paravirt.base_tunnel_sqpn(72, "mainline") == 1096
    assert qkey_after(1111, "mainline") == 0xFFFF000F
    assert qkey_after(72, "mainline") == 0xFFFF0000                   # first proxy
    assert qkey_after(1095, "mainline") == 0xFFFF0000 + 1023          # last proxy: 1095 - 72
    assert qkey_after(2119, "mainline") == 0xFFFF0000 + 1023          # last tunnel: 2119 - 1096
    assert qkey_after(2120, "mainline") == 0x11111111                 # -EINVAL: untouched
    assert qkey_after(71, "mainline") == 0x11111111
    # 3.7: T = 64 + 8 + 8 * 80 = 712, the range ends at 1352: 1111 - 712 = 399 = 0x18F.
    assert paravirt.base_tunnel_sqpn(72, "3.7") == 712
    assert qkey_after(1111, "3.7") == 0xFFFF018F
    # mainline's rules with 80 functions (a distro kernel) give 3.7's numbers
    assert qkey_after(1111, MAINLINE.derive(name="distro", mfunc_max=80, max_num_vf=64)) == 0xFFFF018F


# -- reserved QPs -----------------------------------------------------------------------------------

def test_mlx_qp_0x7cc_is_reserved_on_mainline():
    # device.h: return (qpn < dev->phys_caps.base_sqpn + 8 +
    #                   16 * MLX4_MFUNC_MAX * !!mlx4_is_master(dev) &&
    #                   qpn >= dev->phys_caps.base_sqpn) ||
    #                  (qpn < dev->caps.reserved_qps_cnt[MLX4_QP_REGION_FW]);
    # base_sqpn 0x80 (P = 0x88), master: reserved while 0x80 <= qpn < 0x80 + 8 + 16 * 128 = 0x888.
    # 0x7cc = 1996 < 2184: reserved on mainline; at 80 functions the end is 0x80 + 8 + 1280 = 0x588.
    p = 0x88
    dev = device_ref.Device(np.zeros((128, 2, 128), np.uint8), p, profile="mainline")
    assert device_ref.mlx4_is_qp_reserved(dev, 0x7CC) and device_ref.mlx4_is_qp_reserved(dev, 0x887)
    assert not device_ref.mlx4_is_qp_reserved(dev, 0x888) and not device_ref.mlx4_is_qp_reserved(dev, 0x7F)
    dev37 = device_ref.Device(np.zeros((80, 2, 128), np.uint8), p, profile="3.7")
    assert device_ref.mlx4_is_qp_reserved(dev37, 0x587) and not device_ref.mlx4_is_qp_reserved(dev37, 0x7CC)
    # resource_tracker.c, verify_qp_parameters:
    #     case MLX4_QP_ST_MLX:
    #         port = (qp_ctx->pri_path.sched_queue >> 6 & 1) + 1;
    #         if (transition == QP_TRANS_INIT2RTR && slave != mlx4_master_func_num(dev) &&
    #             mlx4_is_qp_reserved(dev, qpn) && !mlx4_vf_smi_enabled(dev, slave, port)) {
    #                 /* only enabled VFs may create MLX proxy QPs */
    #                 return -EPERM;
    mlx = ud_mailbox(st=7)
    distro = MAINLINE.derive(name="distro-80", mfunc_max=80, max_num_vf=64)
    cases = [("mainline", 0x7CC, None, -1), ("mainline", 0x887, None, -1), ("mainline", 0x888, None, 0),
             ("mainline", 0x7CC, (5, 0), 0),       # VF 5 may use SMI on port 1
             ("3.7", 0x7CC, None, 0),              # 3.7 has no MLX-QP check
             (distro, 0x7CC, None, 0), (distro, 0x587, None, -1)]
    for profile, qpn, smi_at, want in cases:
        prof = resolve(profile)
        smi = np.zeros((prof.mfunc_max, 2), np.uint8)
        if smi_at:
            smi[smi_at] = 1
        v2p = np.zeros(prof.v2p_shape, np.uint8)
        for rewrite in (paravirt.rewrite, paravirt.rewrite_reference):
            _, rc = rewrite(mlx, "INIT2RTR", 5, qpn, v2p, base_proxy_sqpn=p, profile=profile, smi_enabled=smi)
            assert rc[0] == want, (prof.name, hex(qpn), smi_at, rewrite.__name__)


# -- per-slave events -------------------------------------------------------------------------------

def pkey_set_mad(block, pkeys):
    mad = bytearray(256)
    mad[0:4] = bytes([1, 0x01, 1, 0x02])                # base version, SubnMgmt LID-routed, v1, Set
    mad[16:18] = (0x0016).to_bytes(2, "big")            # P_KeyTable
    mad[20:24] = block.to_bytes(4, "big")
    mad[64:128] = struct.pack(">32H", *(list(pkeys) + [0] * (32 - len(pkeys))))
    return mad


def test_per_slave_pkey_events_at_79_80_126_127_128():
    # mad.c, __propagate_pkey_ev:
    #     for (slave = 0; slave < dev->dev->caps.sqp_demux; slave++) {      /* 0..127 on mainline */
    #             if (slave == mlx4_master_func_num(dev->dev)) continue;
    #             if (!mlx4_is_slave_active(dev->dev, slave)) continue;       /* functions 0..num_vfs */
    #             ... if (dev->pkeys.virt2phys_pkey[slave][port_num - 1][ix] == i + 32 * block)
    #                     mlx4_gen_pkey_eqe(dev->dev, slave, port_num);
    # num_vfs = 126: VFs 79, 80 and 126 map their index 5 to physical index 3 and get the event;
    # 127 maps it too but is no function of a 126-VF device (inactive); 128 has no row at all.
    cache, v2p = snoop.init_pkeys(num_vfs=126, profile="mainline")
    for slave in (79, 80, 126, 127):
        v2p[slave, 0, 5] = 3
    mads = np.frombuffer(bytes(pkey_set_mad(0, [0xFFFF, 0, 0, 0x8003])), np.uint8).reshape(1, 256).copy()
    for run in (snoop.smp_snoop, snoop.smp_snoop_reference):
        res = run(cache.copy(), v2p, mads, 1, 0, num_vfs=126, profile="mainline")
        assert res.pkey_change_bitmap[0] == 1 << 3
        assert res.slave_events.shape == (1, 128)
        assert res.slave_events.pairs()[1].tolist() == [79, 80, 126]
        assert len(res.slave_events.of_function(127)) == 0
        with pytest.raises(ValueError, match=r"function must be in 0..127, got 128"):
            res.slave_events.of_function(128)
    # 3.7: __propagate_pkey_ev does not exist (the seed raises only the master's event)
    cache37, v2p37 = snoop.init_pkeys(num_vfs=64, profile="3.7")
    v2p37[64, 0, 5] = 3
    res = snoop.smp_snoop(cache37, v2p37, mads, 1, 0, num_vfs=64, profile="3.7")
    assert res.master_event[0] and not res.slave_events.any() and res.slave_events.shape == (1, 80)
    # mainline's rules on an 80-function kernel: VF 64 of 64 hears it
    distro = MAINLINE.derive(name="distro-80", mfunc_max=80, max_num_vf=64)
    cache80, v2p80 = snoop.init_pkeys(num_vfs=64, profile=distro)
    v2p80[64, 0, 5] = 3
    for run in (snoop.smp_snoop, snoop.smp_snoop_reference):
        res = run(cache80.copy(), v2p80, mads, 1, 0, num_vfs=64, profile=distro)
        assert res.slave_events.pairs()[1].tolist() == [64] and res.slave_events.shape == (1, 80)


def test_lid_change_reaches_vf_126_not_127():
    # mad.c, handle_lid_change_event: mlx4_gen_slaves_port_mgt_ev(dev->dev, port_num,
    #     MLX4_EQ_PORT_INFO_LID_CHANGE_MASK, 0, 0);  -> every active slave, master excluded
    from madpipe.pipeline.mlx4 import snoop_reference

    cache, v2p = snoop.init_pkeys(num_vfs=126, profile="mainline")
    state = snoop_reference.SnoopState(cache, v2p, np.zeros(2, np.uint16), np.zeros(2, np.uint16),
                                       np.zeros(2, np.uint8))
    mad = bytearray(256)
    mad[0:4] = bytes([1, 0x01, 1, 0x02])
    mad[16:18] = (0x0015).to_bytes(2, "big")            # PortInfo
    mad[64 + 16:64 + 18] = (7).to_bytes(2, "big")       # LID 0 -> 7
    out = snoop_reference.smp_snoop_one(state, bytes(mad), 1, 0, num_vfs=126, profile="mainline")
    vfs = [f for f, _, name in out.events if name == "MLX4_EQ_PORT_INFO_LID_CHANGE_MASK"]
    assert vfs == list(range(1, 127))


def test_virtual_pkey_getresp_for_slave_100_reads_inside_the_mainline_table():
    # mlx4_MAD_IFC_wrapper: pidx = priv->virt2phys_pkey[slave][port - 1][vidx];
    # u8[128][2][128]: slave 100's row is inside (flat 25600..25727); in u8[80][2][128] it is not.
    phys = (np.arange(128, dtype=np.uint16) + 0x8000).astype(np.uint16)
    _, v2p = snoop.init_pkeys(num_vfs=126, profile="mainline")
    v2p[100, 0, :4] = [7, 8, 9, 10]
    mad, finding = paravirt.virtual_pkey_getresp(phys, v2p, 100, 1, 0, np.zeros(256, np.uint8),
                                                 profile="mainline", return_finding=True)
    assert finding == 0
    assert [int.from_bytes(mad[64 + 2 * i:66 + 2 * i].tobytes(), "big") for i in range(5)] == \
        [0x8007, 0x8008, 0x8009, 0x800A, 0x807F]     # index 4: unassigned, physical 127
    with pytest.raises(paravirt.Refused, match="outside 0..20479"):
        paravirt.virtual_pkey_getresp(phys, np.zeros((80, 2, 128), np.uint8), 100, 1, 0, np.zeros(256, np.uint8),
                                      profile="3.7")


def test_kernel_equals_reference_on_mainline_sizes():
    rng = np.random.default_rng(128)
    n = 4000
    boxes = rng.integers(0, 256, (n, 256), dtype=np.uint8)
    boxes[:, 9] = rng.choice([0, 1, 3, 6, 7], n)
    boxes[:, 196:198] *= rng.random((n, 1)) < 0.1
    codes = rng.choice(list(paravirt.TRANSITIONS), n)
    slaves = rng.choice([0, 1, 79, 80, 126, 127, 128, 300], n).astype(np.int32)
    qpns = rng.choice([0x7CC, 0x887, 0x888, 1111, 2119, 2120, 72, 71], n).astype(np.uint32)
    for profile in ("mainline", MAINLINE.derive(name="d", mfunc_max=100, max_num_vf=90)):
        prof = resolve(profile)
        v2p = rng.integers(0, 256, prof.v2p_shape, dtype=np.uint8)
        kw = dict(base_proxy_sqpn=72, profile=profile, return_findings=True,
                  active_ports=rng.choice(np.array([0, 1, 2, 3, 3], np.uint8), prof.mfunc_max),
                  smi_enabled=(rng.random((prof.mfunc_max, 2)) < 0.3).astype(np.uint8))
        got = paravirt.rewrite(boxes, codes, slaves, qpns, v2p, **kw)
        want = paravirt.rewrite_reference(boxes, codes, slaves, qpns, v2p, **kw)
        for a, b in zip(got, want):
            assert np.array_equal(a, b)
        assert {0, -1, -22, -34} <= set(got[1].tolist())


def test_cli_profile_mainline_takes_126_vfs(tmp_path, capsys):
    from madpipe.pipeline.mlx4.trace import write_trace

    trace = tmp_path / "t.jsonl"
    box = ud_mailbox()[0]
    box[35] = 0
    write_trace(trace, ["RST2INIT", "RST2INIT"], [126, 0], [1111, 1111], np.stack([box, box]))
    assert main(["paravirt", "-r", str(trace), "--base-proxy-sqpn", "72", "-T", "json"]) == 0
    out = capsys.readouterr().out
    assert '"vfs":126' in out and out.count('"context.qkey",286331153,4294901775') == 2   # 0xFFFF000F
    assert main(["paravirt", "-r", str(trace), "--base-proxy-sqpn", "72", "--profile", "3.7", "-T", "json"]) == 0
    out = capsys.readouterr().out
    # 3.7: function 126 has no row in u8[80][2][128] (refused); the master's command gets 0xFFFF018F
    assert '"vfs":64' in out and '"slave":126,"in_mod":1111,"qpn":1111,"service_type":"UD","rc":-34' in out
    assert out.count('"context.qkey",286331153,4294902159') == 1
    assert isinstance(resolve("mainline"), Profile)
