"""Mainline's Ethernet (RoCE) port path of the QP-modify wrappers: a test per rule, the C quoted.

Expected values are worked out in the comments from mainline's C (resource_tracker.c, port.c),
not from the code under test; every case runs through the numba kernel and the pure-Python
reference, which must agree byte for byte. Then hypothesis: kernel == reference on both port
types and both profiles.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madpipe.pipeline.mlx4 import eth_kernels, paravirt, snoop
from madpipe.pipeline.mlx4 import eth_reference as E
from madpipe.pipeline.mlx4.profiles import MAINLINE

P = 0x48
RC, UC, UD, XRC, MLX = 0, 1, 3, 6, 7
ETH, IB = 2, 1


def mailbox(st=UD, optpar=0, pkey_index=0, port=1, mgid=0, alt_mgid=0, alt_port=1, grh=0, sched_low=0x03):
    m = np.zeros(256, dtype=np.uint8)
    m[0:4] = list(optpar.to_bytes(4, "big"))
    m[8:12] = list(((3 << 28) | (st << 16)).to_bytes(4, "big"))
    m[35] = pkey_index
    m[37] = grh                                    # pri_path.grh_mylmc: the source MAC index
    m[41] = mgid
    m[64] = sched_low | ((port - 1) << 6)
    m[85] = alt_mgid
    m[108] = 0x03 | ((alt_port - 1) << 6)
    m[200:204] = [0xFF, 0xFF, 0xFF, 0xFF]           # param3, MLX4_STRIP_VLAN (bit 30) set
    return m


def one(m, transition, slave, qpn=0x1234, profile="mainline", port_types=(ETH, ETH), num_vfs=5, **kw):
    """The command through the kernel and the reference (which must agree): (row, rc, finding)."""
    _, v2p = snoop.init_pkeys(num_vfs=min(num_vfs, 64), profile=profile)
    kw.setdefault("smac_registered", np.ones((v2p.shape[0], 2, 128), np.uint8))
    box = np.ascontiguousarray(m.reshape(1, 256))
    args = dict(base_proxy_sqpn=P, profile=profile, port_types=np.array(port_types, np.uint8), num_vfs=num_vfs,
                return_findings=True, **kw)
    out, rc, f = paravirt.rewrite(box, transition, slave, qpn, v2p, **args)
    r_out, r_rc, r_f = paravirt.rewrite_reference(box, transition, slave, qpn, v2p, **args)
    assert (out == r_out).all() and (rc == r_rc).all() and (f == r_f).all()
    return out[0], int(rc[0]), int(f[0])


def test_constants_are_the_references():
    for name in ("MBOX_PRI_FL", "MBOX_PRI_VLAN_CONTROL", "MBOX_PRI_GRH_MYLMC", "MBOX_PRI_VLAN_INDEX",
                 "MBOX_PRI_FEUP", "MBOX_PRI_FVL_RX", "MBOX_QOS_VPORT", "MBOX_PARAM3"):
        assert getattr(eth_kernels, name) == getattr(E, name), name


# -- mlx4_get_slave_num_gids / mlx4_get_base_gid_ix --------------------------------------------------

def gid_split(num_vfs, active_ports=None, port=1):
    from madpipe.pipeline.mlx4.device_reference import Device

    dev = Device(np.zeros((128, 2, 128), np.uint8), P, profile="mainline", port_types=[ETH, ETH],
                 num_vfs=num_vfs, active_ports=active_ports)
    return ([E.mlx4_get_slave_num_gids(dev, s, port) for s in range(num_vfs + 1)],
            [E.mlx4_get_base_gid_ix(dev, s, port) for s in range(num_vfs + 1)])


def test_roce_gid_split():
    # port.c:  if (slave == 0) return MLX4_ROCE_PF_GIDS;                         /* 16 */
    #          vfs = bitmap_weight(slaves_pport.slaves, num_vfs + 1) - 1;
    #          if (slave_gid <= ((MLX4_ROCE_MAX_GIDS - MLX4_ROCE_PF_GIDS) % vfs))
    #                  return ((MLX4_ROCE_MAX_GIDS - MLX4_ROCE_PF_GIDS) / vfs) + 1;
    #          return (MLX4_ROCE_MAX_GIDS - MLX4_ROCE_PF_GIDS) / vfs;
    # base:    if (slave_gid <= gids % vfs) return MLX4_ROCE_PF_GIDS + ((gids / vfs) + 1) * (slave_gid - 1);
    #          return MLX4_ROCE_PF_GIDS + (gids % vfs) + ((gids / vfs) * (slave_gid - 1));
    # 5 VFs on both ports: 112 = 2 * 23 + 3 * 22; bases 16, 39, 62, 84, 106.
    assert gid_split(5) == ([16, 23, 23, 22, 22, 22], [0, 16, 39, 62, 84, 106])
    # VF 1 on port 1 alone, VF 2 on port 2 alone, VFs 3 and 4 on both. Port 2: functions 0, 2, 3,
    # 4, vfs = 3 (112 = 38 + 37 + 37); VF 3's rank: 3 - 1 (VF 1, port 1 alone) = 2 -> 16 + 1 + 37.
    ports = np.full(128, 3, np.uint8)
    ports[1], ports[2] = 0b01, 0b10
    num, base = gid_split(4, ports, port=2)
    assert (num[2:], base[2:]) == ([38, 37, 37], [16, 54, 91])


# -- verify_qp_parameters ------------------------------------------------------------------------------

def test_verify_counts_the_slaves_roce_gids_on_ethernet():
    # resource_tracker.c, verify_qp_parameters (RC/XRC/UC, a transition with address paths):
    #     port = (qp_ctx->pri_path.sched_queue >> 6 & 1) + 1;
    #     if (dev->caps.port_mask[port] != MLX4_PORT_TYPE_IB)
    #             num_gids = mlx4_get_slave_num_gids(dev, slave, port);
    #     else
    #             num_gids = 1;
    #     if (qp_ctx->pri_path.mgid_index >= num_gids)
    #             return -EINVAL;
    # VF 2 of 5 has 23 GIDs on an Ethernet port: indices 0..22.
    assert one(mailbox(RC, optpar=0x80, mgid=22), "RTR2RTS", 2)[1] == 0
    assert one(mailbox(RC, optpar=0x80, mgid=23), "RTR2RTS", 2)[1] == -22
    assert one(mailbox(RC, optpar=0x80, mgid=1), "RTR2RTS", 2, port_types=(IB, IB))[1] == -22
    # the alternate path on its own port: VF 3 has 22 GIDs there
    m = mailbox(RC, optpar=0x01, alt_mgid=22, alt_port=2)
    assert one(m, "SQD2RTS", 3, port_types=(IB, ETH))[1] == -22
    assert one(mailbox(RC, optpar=0x01, alt_mgid=21, alt_port=2), "SQD2RTS", 3, port_types=(IB, ETH))[1] == 0


# -- roce_verify_mac -------------------------------------------------------------------------------------

def test_roce_verify_mac_needs_a_registered_source_mac_index():
    # resource_tracker.c, roce_verify_mac (mlx4_INIT2RTR_QP_wrapper: "if (roce_verify_mac(dev, slave,
    # qpc, inbox)) return -EINVAL;"):
    #     port = (sched >> 6 & 1) + 1;
    #     if (mlx4_is_eth(dev, port) && (ts != MLX4_QP_ST_MLX)) {
    #             smac_ix = qpc->pri_path.grh_mylmc & 0x7f;
    #             if (mac_find_smac_ix_in_slave(dev, slave, port, smac_ix, &mac))
    #                     return -ENOENT;
    registered = np.zeros((128, 2, 128), np.uint8)
    registered[3, 0, 5] = 1                                  # VF 3 registered MAC index 5 on port 1
    m = mailbox(UD, grh=0x85)                                # bit 7 is not the index: 0x85 & 0x7f = 5
    assert one(m, "INIT2RTR", 3, smac_registered=registered)[1] == 0
    assert one(mailbox(UD, grh=0x06), "INIT2RTR", 3, smac_registered=registered)[1] == -22
    assert one(mailbox(UD, grh=0x05, port=2), "INIT2RTR", 3, smac_registered=registered)[1] == -22
    assert one(mailbox(MLX, grh=0x06), "INIT2RTR", 3, qpn=0x5000, smac_registered=registered)[1] == 0
    assert one(mailbox(UD, grh=0x06), "INIT2RTR", 3, port_types=(IB, IB), smac_registered=registered)[1] == 0
    assert one(mailbox(UD, grh=0x06), "RTR2RTS", 3, smac_registered=registered)[1] == 0   # INIT2RTR only


# -- update_pkey_index, update_gid ---------------------------------------------------------------------

def test_update_pkey_index_maps_the_same_way_on_ethernet():
    # resource_tracker.c, update_pkey_index has no port-type branch:
    #     new_index = priv->virt2phys_pkey[slave][port - 1][orig_index];
    #     *(u8 *)(inbox->buf + 35) = new_index;
    out_eth, rc, _ = one(mailbox(UD, pkey_index=3), "INIT2INIT", 2)
    out_ib, _, _ = one(mailbox(UD, pkey_index=3), "INIT2INIT", 2, port_types=(IB, IB))
    assert rc == 0 and out_eth[35] == out_ib[35] == 127      # init_pkeys: a VF's index 3 is unassigned


def test_update_gid_adds_the_vfs_base_gid_index_on_ethernet():
    # resource_tracker.c, update_gid (u8 slave):
    #     if (MLX4_QP_ST_UD == ts) { port = (qp_ctx->pri_path.sched_queue >> 6 & 1) + 1;
    #             if (mlx4_is_eth(dev, port))
    #                     qp_ctx->pri_path.mgid_index = mlx4_get_base_gid_ix(dev, slave, port) | 0x80;
    #             else  qp_ctx->pri_path.mgid_index = slave | 0x80;
    #     } else if (RC || XRC || UC) { if (optpar & MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH) { ...
    #             if (mlx4_is_eth(dev, port)) { qp_ctx->pri_path.mgid_index += mlx4_get_base_gid_ix(dev, slave, port);
    #                                           qp_ctx->pri_path.mgid_index &= 0x7f; } else ... = slave & 0x7F;
    # VF 3 of 5: base 62. UD: 62 | 0x80 = 0xBE. RC index 4 -> 66. XRC like RC.
    assert one(mailbox(UD), "INIT2RTR", 3)[0][41] == 0xBE
    assert one(mailbox(UD), "INIT2RTR", 3, port_types=(IB, IB))[0][41] == 0x83
    assert one(mailbox(RC, optpar=0x80, mgid=4), "RTR2RTS", 3)[0][41] == 66
    assert one(mailbox(XRC, optpar=0x80, mgid=4), "RTR2RTS", 3)[0][41] == 66
    out, rc, _ = one(mailbox(RC, optpar=0x81, mgid=0, alt_mgid=2, alt_port=2), "RTR2RTS", 3, port_types=(IB, ETH))
    assert rc == 0 and (out[41], out[85]) == (3, 64)           # IB primary: slave; Ethernet alternate: 2 + 62
    # 3.7 knows no Ethernet: slave | 0x80 whatever the port
    assert one(mailbox(UD), "INIT2RTR", 3, profile="3.7")[0][41] == 0x83


def test_adjust_qp_sched_queue_always_writes_an_ethernet_ports_sched_queue():
    # resource_tracker.c, adjust_qp_sched_queue:
    #     if (optpar & (MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH | MLX4_QP_OPTPAR_SCHED_QUEUE) ||
    #         qpc->pri_path.sched_queue || mlx4_is_eth(dev, port + 1)) {
    #             qpc->pri_path.sched_queue = pri_sched_queue;
    ports = np.full(128, 3, np.uint8)
    ports[2] = 0b10                                           # VF 2 owns physical port 2 only
    m = mailbox(UD, sched_low=0)
    assert one(m, "RTR2RTS", 2, active_ports=ports)[0][64] == 0x40
    assert one(m, "RTR2RTS", 2, active_ports=ports, port_types=(IB, IB))[0][64] == 0


# -- update_vport_qp_param -------------------------------------------------------------------------

def vst(slave=3, port=1, **columns):
    state = paravirt.vport_state()
    for name, value in columns.items():
        state[slave, port - 1, getattr(E, f"VPORT_{name.upper()}")] = value
    return state


def test_vst_default_vlan_and_qos():
    # resource_tracker.c, update_vport_qp_param (u8 slave; INIT2RTR, after update_gid):
    #     if (MLX4_VGT != vp_oper->state.default_vlan) {
    #         if (mlx4_is_qp_reserved(dev, qpn)) return 0;
    #         if (qp_type == MLX4_QP_ST_UD || (qp_type == MLX4_QP_ST_MLX && mlx4_is_eth(dev, port))) {
    #             if (dev->caps.bmme_flags & MLX4_BMME_FLAG_VSD_INIT2RTR) {
    #                 *(__be32 *)inbox->buf = cpu_to_be32(be32_to_cpu(*(__be32 *)inbox->buf) |
    #                                                     MLX4_QP_OPTPAR_VLAN_STRIPPING);          /* 1 << 21 */
    #                 qpc->param3 &= ~cpu_to_be32(MLX4_STRIP_VLAN); } ...                      /* 1 << 30 */
    #         qpc->pri_path.vlan_control &= MLX4_CTRL_ETH_SRC_CHECK_IF_COUNTER;                /* 0x80 */
    #         ... else if (0 != vp_oper->state.default_vlan) { /* vst 802.1Q */
    #             qpc->pri_path.vlan_control |= MLX4_VLAN_CTRL_ETH_TX_BLOCK_TAGGED |          /* 0x40 */
    #                 MLX4_VLAN_CTRL_ETH_RX_BLOCK_PRIO_TAGGED | MLX4_VLAN_CTRL_ETH_RX_BLOCK_UNTAGGED; } /* 2, 1 */
    #         qpc->pri_path.fvl_rx |= MLX4_FVL_RX_FORCE_ETH_VLAN;                              /* 0x04 */
    #         qpc->pri_path.vlan_index = vp_oper->vlan_idx;
    #         qpc->pri_path.fl |= MLX4_FL_ETH_HIDE_CQE_VLAN; ... qpc->pri_path.fl |= MLX4_FL_CV;  /* 0x04, 0x40 */
    #         qpc->pri_path.feup |= MLX4_FEUP_FORCE_ETH_UP | MLX4_FVL_FORCE_ETH_VLAN;          /* 0x40, 0x08 */
    #         qpc->pri_path.sched_queue &= 0xC7;
    #         qpc->pri_path.sched_queue |= (vp_oper->state.default_qos) << 3;
    #         qpc->qos_vport = vp_oper->state.qos_vport; }
    m = mailbox(UD)
    m[33] = 0xFF                                              # vlan_control: only bit 7 survives
    vport = vst(default_vlan=100, default_qos=5, vlan_idx=7, qos_vport=9)
    out, rc, _ = one(m, "INIT2RTR", 3, vport=vport)
    assert rc == 0
    assert out[1] == 0x20 and out[200] == 0xBF                # VLAN_STRIPPING set, STRIP_VLAN cleared
    assert (out[33], out[67], out[65], out[32], out[66]) == (0x80 | 0x43, 0x04, 7, 0x44, 0x48)
    assert (out[64], out[199]) == ((0x03 & 0xC7) | (5 << 3), 9)
    # an RC QP: no VLAN stripping, the rest the same
    out, rc, _ = one(mailbox(RC), "INIT2RTR", 3, vport=vport)
    assert rc == 0 and out[1] == 0 and out[200] == 0xFF and out[33] == 0x43
    # the reserved QPs (special, proxy, tunnel) do not operate over vlans: nothing at all
    base, _, _ = one(mailbox(UD), "INIT2RTR", 3, qpn=P + 1)
    out, _, _ = one(mailbox(UD), "INIT2RTR", 3, qpn=P + 1, vport=vst(default_vlan=100, spoofchk=1, mac_idx=4))
    assert (out == base).all()
    # the C does not look at the port type here: an IB port's VF with VST set gets it too
    out, _, _ = one(m, "INIT2RTR", 3, vport=vport, port_types=(IB, IB))
    assert out[65] == 7 and out[33] == 0xC3
    # 3.7 has no update_vport_qp_param
    out, _, _ = one(m, "INIT2RTR", 3, vport=paravirt.vport_state("3.7"), profile="3.7")
    assert out[65] == 0 and out[33] == 0xFF


def test_vst_link_state_priority_tag_and_qinq():
    #   if (vp_oper->state.link_state == IFLA_VF_LINK_STATE_DISABLE && ... UPDATE_QP)
    #           vlan_control |= TX_BLOCK_TAGGED | TX_BLOCK_PRIO_TAGGED | TX_BLOCK_UNTAGGED |
    #                           RX_BLOCK_PRIO_TAGGED | RX_BLOCK_UNTAGGED | RX_BLOCK_TAGGED;      /* 0x77 */
    #   else if (0 != default_vlan) { if (vlan_proto == htons(ETH_P_8021AD))
    #           vlan_control |= TX_BLOCK_PRIO_TAGGED | TX_BLOCK_TAGGED | RX_BLOCK_PRIO_TAGGED |
    #                           RX_BLOCK_UNTAGGED;  /* 0x63 */ ... fl |= MLX4_FL_SV;          /* 0x20 */
    #   } else { /* priority tagged */ vlan_control |= TX_BLOCK_TAGGED | RX_BLOCK_TAGGED; }   /* 0x44 */
    assert one(mailbox(UD), "INIT2RTR", 3, vport=vst(default_vlan=100, link_state=2))[0][33] == 0x77
    assert one(mailbox(UD), "INIT2RTR", 3, vport=vst(default_vlan=0))[0][33] == 0x44
    out = one(mailbox(UD), "INIT2RTR", 3, vport=vst(default_vlan=100, vlan_proto=1))[0]
    assert (out[33], out[32]) == (0x63, 0x24)
    # VGT (default_vlan 4095) with link state disabled: no VST branch at all
    assert one(mailbox(UD), "INIT2RTR", 3, vport=vst(link_state=2))[0][33] == 0


def test_spoof_check_forces_the_vfs_mac_index():
    #   if (vp_oper->state.spoofchk) {
    #           qpc->pri_path.feup |= MLX4_FSM_FORCE_ETH_SRC_MAC;                                /* 0x20 */
    #           qpc->pri_path.grh_mylmc = (0x80 & qpc->pri_path.grh_mylmc) + vp_oper->mac_idx; }
    out, rc, _ = one(mailbox(UD, grh=0x85), "INIT2RTR", 3, vport=vst(spoofchk=1, mac_idx=9))
    assert rc == 0 and (out[66], out[37]) == (0x20, 0x89)
    out, _, _ = one(mailbox(UD, grh=0x85, port=2), "INIT2RTR", 3, vport=vst(spoofchk=1, mac_idx=9))
    assert (out[66], out[37]) == (0, 0x85)                   # port 2's vport has no spoof check


def test_a_division_by_zero_in_the_c_is_refused():
    # mlx4_get_base_gid_ix divides by the VFs on the port: with none (num_vfs 0) the C would divide
    # by zero; mainline reaches it only past adjust_qp_sched_queue, which a profile can leave out.
    no_sched = MAINLINE.derive(name="no-sched", adjust_sched_queue=False)
    out, rc, f = one(mailbox(UD), "INIT2RTR", 1, num_vfs=0, profile=no_sched)
    assert (rc, f) == (paravirt.RC_REFUSED, paravirt.FINDING_REFUSED) and (out == mailbox(UD)).all()
    assert one(mailbox(UD), "INIT2RTR", 1, num_vfs=0)[1] == -22   # mainline: no port for function 1


def test_argument_errors():
    _, v2p = snoop.init_pkeys()
    box = np.zeros((1, 256), np.uint8)
    for kw, message in ((dict(port_types=np.ones(3, np.uint8)), r"port_types: expected shape \(2\)"),
                        (dict(num_vfs=127), r"num_vfs: expected None or an int in 0..126"),
                        (dict(vport=np.zeros((80, 2, 8), np.uint16)), r"vport: expected shape \(128, 2, 8\)"),
                        (dict(smac_registered=np.zeros((128, 2, 64), np.uint8)), "smac_registered")):
        with pytest.raises(ValueError, match=message):
            paravirt.rewrite(box, "INIT2RTR", 1, 0, v2p, base_proxy_sqpn=P, profile="mainline", **kw)


# -- kernel == reference ----------------------------------------------------------------------------

PROFILES = ["3.7", "mainline", MAINLINE.derive(name="no-sched", adjust_sched_queue=False)]


@st.composite
def device(draw):
    profile = draw(st.sampled_from(PROFILES))
    f = 80 if profile == "3.7" else 128
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    vport = paravirt.vport_state(profile)
    vport[:, :, E.VPORT_DEFAULT_VLAN] = rng.choice([4095, 4095, 0, 100, 5000], (f, 2))
    for column, top in ((E.VPORT_DEFAULT_QOS, 9), (E.VPORT_LINK_STATE, 3), (E.VPORT_SPOOFCHK, 2),
                        (E.VPORT_VLAN_IDX, 300), (E.VPORT_MAC_IDX, 300), (E.VPORT_QOS_VPORT, 300),
                        (E.VPORT_VLAN_PROTO, 3)):
        vport[:, :, column] = rng.integers(0, top, (f, 2))
    return dict(
        profile=profile,
        port_types=np.array(draw(st.sampled_from([(1, 1), (2, 2), (1, 2), (2, 1), (0, 3)])), np.uint8),
        num_vfs=draw(st.sampled_from([None, 0, 1, 4, 64])),
        vport=vport,
        smac_registered=(rng.random((f, 2, 128)) < draw(st.sampled_from([0.0, 0.5, 1.0]))).astype(np.uint8),
        active_ports=rng.choice(np.array([0, 1, 2, 3, 3, 3], np.uint8), f),
        smi_enabled=(rng.random((f, 2)) < 0.3).astype(np.uint8),
        master=draw(st.sampled_from([0, 0, 3])),
    ), rng


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dev=device(), n=st.integers(1, 64))
def test_kernel_equals_reference_on_both_port_types_hypothesis(dev, n):
    kw, rng = dev
    f = 80 if kw["profile"] == "3.7" else 128
    boxes = rng.integers(0, 256, (n, 256), dtype=np.uint8)
    boxes[:, 9] = rng.choice([RC, UC, UD, XRC, MLX, 2], n)
    boxes[:, 0:4] = 0
    boxes[:, 3] = rng.choice([0, 0x80, 0x01, 0x81], n)
    boxes[:, 2] = rng.choice([0, 1], n)
    boxes[:, 196:198] *= rng.random((n, 1)) < 0.2
    boxes[:, 41] *= rng.random(n) < 0.5
    codes = rng.choice(list(paravirt.TRANSITIONS), n)
    slaves = rng.choice([0, 1, 2, 3, 4, 5, 64, f - 1, f, 300, -1], n).astype(np.int32)
    qpns = rng.choice([0x10, P - 1, P, P + 100, P + 8 * f, 0x5000, 0x7FFFFF], n).astype(np.uint32)
    v2p = rng.integers(0, 256, (f, 2, 128), dtype=np.uint8)
    args = dict(base_proxy_sqpn=P, return_findings=True, **kw)
    got = paravirt.rewrite(boxes, codes, slaves, qpns, v2p, **args)
    want = paravirt.rewrite_reference(boxes, codes, slaves, qpns, v2p, **args)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    inplace = boxes.copy()
    _, rc, _ = paravirt.rewrite_inplace(inplace, codes, slaves, qpns, v2p, **args)
    assert np.array_equal(inplace, got[0]) and np.array_equal(rc, got[1])


def test_kernel_equals_reference_on_a_random_ethernet_batch():
    """The hypothesis test's check on one larger seeded batch, in the quick suite."""
    rng = np.random.default_rng(99)
    n = 3000
    boxes = rng.integers(0, 256, (n, 256), dtype=np.uint8)
    boxes[:, 9] = rng.choice([RC, UC, UD, XRC, MLX], n)
    boxes[:, 196:198] *= rng.random((n, 1)) < 0.1
    boxes[:, 41] *= rng.random(n) < 0.5
    codes = rng.choice(list(paravirt.TRANSITIONS), n)
    slaves = rng.choice([0, 1, 2, 3, 5, 8, 9, 127, 200], n).astype(np.int32)
    qpns = rng.choice([0x10, P, 0x1000, 0x7CC], n).astype(np.uint32)
    vport = paravirt.vport_state()
    vport[:, :, E.VPORT_DEFAULT_VLAN] = rng.choice([4095, 0, 100], (128, 2))
    vport[:, :, E.VPORT_SPOOFCHK] = rng.integers(0, 2, (128, 2))
    vport[:, :, E.VPORT_LINK_STATE] = rng.integers(0, 3, (128, 2))
    vport[:, :, E.VPORT_MAC_IDX] = rng.integers(0, 256, (128, 2))
    smac = (rng.random((128, 2, 128)) < 0.5).astype(np.uint8)
    ports = rng.choice(np.array([1, 2, 3, 3, 0], np.uint8), 128)
    _, v2p = snoop.init_pkeys(num_vfs=8)
    seen = set()
    for port_types in ((ETH, ETH), (IB, ETH), (IB, IB)):
        for num_vfs in (8, None):
            kw = dict(base_proxy_sqpn=P, profile="mainline", port_types=np.array(port_types, np.uint8),
                      num_vfs=num_vfs, vport=vport, smac_registered=smac, active_ports=ports, return_findings=True)
            got = paravirt.rewrite(boxes, codes, slaves, qpns, v2p, **kw)
            want = paravirt.rewrite_reference(boxes, codes, slaves, qpns, v2p, **kw)
            for a, b in zip(got, want):
                assert np.array_equal(a, b)
            seen |= set(got[1].tolist())
    assert {0, -1, -22, -34} <= seen
